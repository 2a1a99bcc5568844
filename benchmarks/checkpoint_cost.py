"""What a full nnfin training checkpoint costs, next to plain ``torch.save`` of the same state.

Run (from the repository root)::

    .venv/bin/python benchmarks/checkpoint_cost.py                  # 15 repeats, 100k-row epochs
    .venv/bin/python benchmarks/checkpoint_cost.py --full --json out.json  # also a 1M-row epoch

Two networks, each an nnfin ``Trainer`` (built as ``tests/test_train.py`` builds one) with Adam,
trained for one epoch first so that the optimizer holds its moment estimates:

* ``1-6-6-1 sigmoid`` - the lecture's network on cos(x);
* ``4x400 relu``      - four hidden layers of 400 ReLU units, 4 inputs (a generated file).

The state saved is what ``CheckpointCallback`` writes: ``trainer.state_dict()`` (weights,
optimizer, scheduler, sampler and RNG states, callbacks, history) plus the resolved config and
the data's sha256. Variants, each the median over ``--repeats`` runs after one warm-up:

* ``nnfin``   - ``save_checkpoint`` (NumPy arrays made loadable with weights_only, sha256 trailer,
  temporary file + fsync + rename) and ``load_checkpoint`` (checksum, ``weights_only=True``);
* ``plain``   - ``torch.save(state, path)`` and ``torch.load(path, weights_only=False)`` of the same
  state (no checksum, no fsync; weights_only=True cannot read the NumPy RNG state);
* ``lecture`` - the lecture's ``{'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'}``
  with ``torch.save`` / ``torch.load(weights_only=True)``.

Per-epoch cost for the 4x400 network on 1M rows: one epoch (batch 64, Adam, MSE, all rows used
for training, no validation pass) is timed on ``--epoch-rows`` rows (median of 3) and scaled
linearly to 1M rows; ``--full`` also times a real 1M-row epoch. The checkpoint cost per epoch is
a ``CheckpointCallback(every=1).on_epoch_end`` call whose validation loss improves, its worst
case: an in-memory snapshot of the best state, then ``last.ckpt`` (the old one renamed to
``prev.ckpt``) and ``best.ckpt`` written.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nnfin.config import load_config
from nnfin.data import build_data
from nnfin.models import build_model
from nnfin.train.checkpoint import CheckpointCallback, load_checkpoint, save_checkpoint
from nnfin.train.loop import Trainer

NETWORKS = {
    "1-6-6-1 sigmoid": ["data.kind=cos", "data.n=2000", "model.neurons=[6,6]",
                        "model.activation=sigmoid"],
    "4x400 relu": ["model.neurons=[400,400,400,400]", "model.activation=relu"],
}


def write_inputs(folder: Path, rows: int) -> Path:
    """A 4-input, 1-output Parquet file (the target only has to be a smooth function)."""
    path = folder / f"inputs-{rows}.parquet"
    if not path.exists():
        rng = np.random.default_rng(0)
        x = rng.uniform(-1.0, 1.0, size=(rows, 4))
        y = np.sin(x @ np.array([1.0, -2.0, 0.5, 3.0])) + x[:, 0] * x[:, 1]
        frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(y=y)
        frame.to_parquet(path, index=False)
    return path


def make_trainer(overrides: list[str], callbacks=()) -> Trainer:
    cfg = load_config(None, ["train.progress=false", "train.device=cpu", "run.plots=false",
                             *overrides])
    torch.manual_seed(cfg.train.seed)
    data = build_data(cfg.data, dtype=cfg.train.dtype)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim).to(
        getattr(torch, cfg.train.dtype))
    return Trainer(model, data, cfg, callbacks=list(callbacks))


def network_overrides(name: str, folder: Path, rows: int) -> list[str]:
    extra = NETWORKS[name]
    if name.startswith("4x400"):
        extra = [*extra, "data.kind=file", f"data.path='{write_inputs(folder, rows)}'",
                 "data.target='y'"]
    return extra


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nbytes(obj: Any) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def checkpoint_costs(name: str, folder: Path, repeats: int) -> dict[str, Any]:
    trainer = make_trainer([*network_overrides(name, folder, 2000), "train.epochs=1"])
    trainer.fit()  # Adam now holds exp_avg / exp_avg_sq for every parameter
    state = {**trainer.state_dict(), "config": trainer.cfg.to_dict(), "data_sha256": "0" * 64}
    lecture = {"epoch": 1, "model_state_dict": trainer.model.state_dict(),
               "optimizer_state_dict": trainer.optimizer.state_dict(), "loss": 0.01}
    paths = {k: folder / f"{k}.ckpt" for k in ("nnfin", "plain", "lecture")}
    out: dict[str, Any] = {"parameters": sum(p.numel() for p in trainer.model.parameters()),
                           "weights_bytes": nbytes(trainer.model.state_dict())}
    out["save_s"] = {
        "nnfin": median_time(lambda: save_checkpoint(paths["nnfin"], state), repeats),
        "plain": median_time(lambda: torch.save(state, paths["plain"]), repeats),
        "lecture": median_time(lambda: torch.save(lecture, paths["lecture"]), repeats),
    }
    out["load_s"] = {
        "nnfin": median_time(lambda: load_checkpoint(paths["nnfin"]), repeats),
        "plain": median_time(lambda: torch.load(paths["plain"], weights_only=False), repeats),
        "lecture": median_time(lambda: torch.load(paths["lecture"], weights_only=True), repeats),
    }
    out["bytes"] = {k: p.stat().st_size for k, p in paths.items()}
    return out


def epoch_time(folder: Path, rows: int, batch_size: int, repeats: int) -> float:
    """Wall time of one training epoch of the 4x400 network on ``rows`` rows."""
    overrides = [*network_overrides("4x400 relu", folder, rows), f"data.n={rows}",
                 "data.split=[1.0,0.0,0.0]", f"train.batch_size={batch_size}", "train.epochs=1"]
    times = []
    for _ in range(repeats):
        trainer = make_trainer(overrides)
        start = time.perf_counter()
        trainer.fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_epoch_checkpoint_s(folder: Path, repeats: int) -> float:
    """Worst-case ``CheckpointCallback.on_epoch_end`` for the 4x400 network (val improves)."""
    overrides = [*network_overrides("4x400 relu", folder, 2000), "train.epochs=1"]
    trainer = make_trainer(overrides)
    trainer.fit()
    cb = CheckpointCallback(folder / "checkpoints", trainer.cfg, "0" * 64, every=1)
    loss = [1.0]

    def one_epoch() -> None:
        loss[0] *= 0.5
        cb.on_epoch_end(trainer, {"val_loss": loss[0]})

    return median_time(one_epoch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epoch-rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--full", action="store_true", help="also time a real 1M-row epoch")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores; median of {args.repeats}")
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        header = (f"{'network':<16} {'params':>8} {'variant':<8} {'size':>10} {'save ms':>9} "
                  f"{'load ms':>9} {'save x':>7} {'load x':>7}")
        print(header + "\n" + "-" * len(header))
        for name in NETWORKS:
            r = checkpoint_costs(name, folder, args.repeats)
            results[name] = r
            for v in ("nnfin", "plain", "lecture"):
                rs, rl = r["save_s"][v] / r["save_s"]["plain"], r["load_s"][v] / r["load_s"]["plain"]
                print(f"{name:<16} {r['parameters']:>8} {v:<8} {r['bytes'][v] / 1024:>8.1f}KB "
                      f"{r['save_s'][v] * 1e3:>9.2f} {r['load_s'][v] * 1e3:>9.2f} "
                      f"{rs:>6.2f}x {rl:>6.2f}x")
        print("(x: relative to plain torch.save / torch.load of the same state)\n")

        ckpt_s = per_epoch_checkpoint_s(folder, args.repeats)
        rows = args.epoch_rows
        t_rows = epoch_time(folder, rows, args.batch_size, repeats=3)
        t_1m = t_rows * 1_000_000 / rows
        results["epoch"] = {"rows_timed": rows, "batch_size": args.batch_size,
                            "epoch_s_timed": t_rows, "epoch_s_1m_estimate": t_1m,
                            "checkpoint_per_epoch_s": ckpt_s}
        print(f"4x400 relu, batch {args.batch_size}: one epoch on {rows:,} rows {t_rows:.2f} s "
              f"-> 1M rows ~ {t_1m:.1f} s (linear scaling)")
        if args.full:
            t_full = epoch_time(folder, 1_000_000, args.batch_size, repeats=1)
            results["epoch"]["epoch_s_1m_measured"] = t_full
            print(f"4x400 relu, batch {args.batch_size}: one epoch on 1,000,000 rows measured "
                  f"{t_full:.1f} s")
            t_1m = t_full
        frac = ckpt_s / t_1m
        results["epoch"]["fraction"] = frac
        print(f"checkpoint every epoch (last + best, worst case): {ckpt_s * 1e3:.1f} ms "
              f"= {frac:.3%} of a 1M-row epoch -> "
              f"{'below' if frac < 0.05 else 'NOT below'} the 5% budget")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
