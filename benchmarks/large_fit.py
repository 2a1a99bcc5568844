"""One epoch of a 4x400 ReLU network on 1M rows: nnfin's loop, a plain DataLoader loop, the sgemm peak.

Run (from the repository root)::

    .venv/bin/python benchmarks/large_fit.py                          # 1M rows, 3 repeats, + compile
    .venv/bin/python benchmarks/large_fit.py --rows 200000 --repeats 5 --no-compile --json out.json
    .venv/bin/python benchmarks/large_fit.py --threads 1 --rows 20480 --repeats 25  # per-step view

Data: ``--rows`` rows (default 1,000,000) of 4 uniform random inputs and one smooth target, the
Black-Scholes price of a European call per unit strike,
``C/K = m N(d1) - exp(-r T) N(d2)``, ``d1,2 = (ln m + (r +- sigma^2/2) T) / (sigma sqrt T)``, with
moneyness ``m = S/K`` in [0.7, 1.3], maturity ``T`` in [0.05, 2], volatility ``sigma`` in
[0.05, 0.6] and rate ``r`` in [0, 0.08] (float64 ``torch.special.ndtr``; seed 0). The arrays go
through ``nnfin.data.data_from_indices`` once (all rows are training rows, standardised), and
every variant trains on the same scaled float32 tensors, from the same initial weights
(``[model] init = "xavier"``), with MSE loss, batches of 1024 and Adam (lr = 1e-3).

Network 4-400-400-400-400-1 (ReLU). Matmul FLOPs are counted from the layer shapes: a layer
``in -> out`` costs ``2 in out`` FLOPs per row for the forward product, the same again for the
weight gradient, and the same again for the input gradient (not needed by the first layer,
whose input is data): 2.89 MFLOP per row, 2.89 TFLOP per 1M-row epoch. Bias, ReLU, loss and
optimizer work are not counted (they are memory-bound and small next to the products).

Each variant first warms up for two epochs on a separate data set of 16 full batches and a last
batch as short as the timed epochs' last one (lazy initialisation, and the compilation for
``nnfin-compile`` for both batch sizes: its compile time is the first warm-up epoch minus the
second). Then each variant trains one model for ``--repeats`` epochs on the ``--rows`` rows, each
epoch timed, epochs interleaved across variants (one epoch of each per repeat). A fresh
``torch.compile`` wrapper of a new model reuses the warm-up's compiled graphs (no recompilation;
inductor also caches them on disk between processes):

* ``nnfin``         - ``nnfin.train.loop.Trainer`` (as ``tests/test_train.py`` builds one), no
  validation pass: on-device ``randperm`` batches through ``index_select``, fused Adam; the
  epoch time is the loop's own timer (``trainer.state.elapsed``);
* ``dataloader``    - the loop users write: ``DataLoader(TensorDataset(x, y), batch_size=1024,
  shuffle=True)``, an ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``, ``torch.optim.Adam`` with
  its defaults (not fused), ``zero_grad()``/``backward()``/``step()`` and ``loss.item()`` per step;
* ``nnfin-compile`` - ``nnfin`` with ``[train] compile = true`` (``--compile``, the default).

The sgemm peak is measured in the same run, before every timed epoch and after the last one:
float32 ``torch.mm`` of a square 2048^3 product and of the network's shapes (1024x400 @ 400x400,
the forward and input-gradient products; 400x1024 @ 1024x400, the weight gradient), each the
median of 3 bursts of at least 0.1 s; the peak of a measurement is its best shape. Each epoch's
fraction of peak is its achieved FLOP/s (counted FLOPs / epoch time) over the mean of the peaks
measured just before and just after it, and the speedup is taken per repeat (the dataloader
epoch over the variant's epoch of the same repeat); both are medians of these paired values, so
that load from other processes, which shifts over minutes, cancels as far as it can. The order
of the variants rotates from repeat to repeat. "GEMM-only" is one training step's products
alone, chained in the order a step runs them, i.e. what an epoch would cost if nothing but the
products ran.

With ``--rows`` below 1M the table also shows the epoch time scaled linearly to 1M rows (a step
costs the same whatever the number of rows, so many short epochs, e.g. ``--rows 20480 --repeats
25``, give the steadiest per-step comparison). The CPU is shared with whatever else runs: every
time is a median, and the spread is printed. With more runnable processes than cores, several
OpenMP threads per product stall whenever one of them is descheduled; ``--threads 1`` is then
the steadier measurement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from nnfin.config import load_config
from nnfin.data import Data, data_from_indices
from nnfin.models import build_model
from nnfin.train.callbacks import Callback
from nnfin.train.loop import Trainer

FULL_ROWS = 1_000_000
BATCH_SIZE = 1024
LR = 1e-3
NEURONS = [400, 400, 400, 400]
IN_DIM, OUT_DIM = 4, 1
FEATURES = ["moneyness", "T", "sigma", "r"]
RANGES = [(0.7, 1.3), (0.05, 2.0), (0.05, 0.6), (0.0, 0.08)]
SEED = 0
BASE_OVERRIDES = [
    "model.kind=mlp", f"model.neurons={NEURONS}", "model.activation=relu", "model.init=xavier",
    "optim.name=adam", f"optim.lr={LR}", f"train.batch_size={BATCH_SIZE}", "train.sampling=shuffle",
    "train.device=cpu", "train.progress=false", "train.loss=mse", f"train.seed={SEED}",
    "data.split=[1.0,0.0,0.0]",
]
VARIANTS = {
    "nnfin": "nnfin Trainer: randperm + index_select batches, fused Adam, no validation pass",
    "dataloader": "DataLoader(TensorDataset, shuffle=True), nn.Sequential, torch.optim.Adam "
                  "(default impl.), loss.item() per step",
    "nnfin-compile": "nnfin Trainer with [train] compile = true (torch.compile of the module)",
}
WIDTHS = [IN_DIM, *NEURONS, OUT_DIM]
WARMUP_BATCHES = 16


# ---------------------------------------------------------------------------------- FLOPs


def flops_per_row() -> int:
    """Matmul FLOPs of one training row: forward, weight gradient, input gradient (not layer 1)."""
    total = 0
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(WIDTHS)):
        mult = 2 if k == 0 else 3
        total += mult * 2 * fan_in * fan_out
    return total


# ----------------------------------------------------------------------------------- data


def make_data(rows: int) -> Data:
    """Uniform inputs in ``RANGES`` and the Black-Scholes call price per unit strike."""
    gen = torch.Generator().manual_seed(SEED)
    lo = torch.tensor([r[0] for r in RANGES], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in RANGES], dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(rows, IN_DIM, generator=gen, dtype=torch.float64)
    m, t, sigma, r = x.unbind(1)
    vol = sigma * t.sqrt()
    d1 = (m.log() + (r + 0.5 * sigma**2) * t) / vol
    d2 = d1 - vol
    call = m * torch.special.ndtr(d1) - torch.exp(-r * t) * torch.special.ndtr(d2)
    none = np.arange(0)
    return data_from_indices(x.numpy(), call.unsqueeze(1).numpy(), np.arange(rows), none, none,
                             features=FEATURES, targets=["call"], scale=True, device="cpu",
                             dtype="float32")


# ---------------------------------------------------------------------------------- sgemm


def _rate(fn: Callable[[], Any], flops: float, min_s: float = 0.1, bursts: int = 3) -> float:
    """GFLOP/s of ``fn`` (``flops`` per call): median over ``bursts`` bursts of >= ``min_s``."""
    for _ in range(3):
        fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    per_burst = max(1, int(calls * min_s / (time.perf_counter() - start)))
    times = []
    for _ in range(bursts):
        start = time.perf_counter()
        for _ in range(per_burst):
            fn()
        times.append((time.perf_counter() - start) / per_burst)
    return flops / statistics.median(times) / 1e9


def best_mm(rates: dict[str, float]) -> float:
    """The peak of one :func:`measure_sgemm`: its best ``torch.mm`` rate."""
    return max(v for k, v in rates.items() if k.startswith("mm "))


def measure_sgemm() -> dict[str, float]:
    """GFLOP/s of float32 ``torch.mm`` for a square product and the network's shapes, and of one
    training step's products alone (``gemm_step``)."""
    g = torch.Generator().manual_seed(1)
    out: dict[str, float] = {}
    n = 2048
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out["mm 2048x2048 @ 2048x2048"] = _rate(lambda: torch.mm(a, b), 2 * n**3)
    h, B = NEURONS[0], BATCH_SIZE
    x, w, c = torch.randn(B, h, generator=g), torch.randn(h, h, generator=g), torch.empty(B, h)
    out[f"mm {B}x{h} @ {h}x{h}"] = _rate(lambda: torch.mm(x, w, out=c), 2 * B * h * h)
    xt, wg = x.t().contiguous(), torch.empty(h, h)
    out[f"mm {h}x{B} @ {B}x{h}"] = _rate(lambda: torch.mm(xt, x, out=wg), 2 * B * h * h)

    # one step's products, in a step's order, with nn.Linear's layouts (weights are (out, in))
    weights = [torch.randn(o, i, generator=g) for i, o in itertools.pairwise(WIDTHS)]
    biases = [torch.zeros(o) for o in WIDTHS[1:]]
    acts = [torch.randn(B, i, generator=g) for i in WIDTHS[:-1]]
    grads = [torch.randn(B, o, generator=g) for o in WIDTHS[1:]]

    def step() -> None:
        for a_in, wt, bias in zip(acts, weights, biases, strict=True):
            torch.addmm(bias, a_in, wt.t())
        for k in range(len(weights) - 1, -1, -1):
            torch.mm(grads[k].t(), acts[k])  # weight gradient (out, in)
            if k > 0:
                torch.mm(grads[k], weights[k])  # input gradient (B, in)

    out["gemm_step"] = _rate(step, flops_per_row() * B)
    return out


# ------------------------------------------------------------------------------- variants


class _PauseEachEpoch(Callback):
    """Stops ``Trainer.fit`` after every epoch, so epochs of different variants interleave."""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        trainer.stop("paused by the benchmark")


class NnfinRun:
    """An nnfin ``Trainer`` set up for ``epochs`` epochs, run one epoch per :meth:`epoch` call."""

    def __init__(self, data: Data, epochs: int, *, compile: bool) -> None:
        cfg = load_config(None, [*BASE_OVERRIDES, f"train.epochs={epochs}",
                                 f"train.compile={str(compile).lower()}"])
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim)
        self.trainer = Trainer(model, data, cfg, callbacks=[_PauseEachEpoch()])

    def epoch(self) -> tuple[float, float]:
        """``(seconds, mean training loss)`` of the next epoch, by the loop's own timer."""
        before = self.trainer.state.elapsed
        self.trainer.fit()
        return self.trainer.state.elapsed - before, self.trainer.state.history[-1]["train_loss"]


class DataLoaderRun:
    """The plain PyTorch loop, from the same initial weights as nnfin's model."""

    def __init__(self, data: Data) -> None:
        cfg = load_config(None, BASE_OVERRIDES)
        torch.manual_seed(cfg.train.seed)
        reference = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim)
        layers: list[nn.Module] = []
        for k, (fan_in, fan_out) in enumerate(itertools.pairwise(WIDTHS)):
            layers.append(nn.Linear(fan_in, fan_out))
            if k < len(WIDTHS) - 2:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)
        ref_linears = [m for m in reference.modules() if isinstance(m, nn.Linear)]
        mine = [m for m in self.model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for a, b in zip(mine, ref_linears, strict=True):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
        x, y = data.split("train")
        self.loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss_fn = nn.MSELoss()

    def epoch(self) -> tuple[float, float]:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        model.train()
        losses: list[float] = []
        start = time.perf_counter()
        for xb, yb in self.loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return time.perf_counter() - start, float(np.mean(losses))


# ----------------------------------------------------------------------------------- main


def make_run(name: str, data: Data, epochs: int) -> NnfinRun | DataLoaderRun:
    if name == "dataloader":
        return DataLoaderRun(data)
    return NnfinRun(data, epochs, compile=name == "nnfin-compile")


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="training rows (default 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant (median)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch.set_num_threads for everything (default: all CPUs)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also run nnfin with [train] compile = true")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write results here")
    args = parser.parse_args(argv)
    if args.rows < BATCH_SIZE:
        parser.error(f"--rows must be at least the batch size, {BATCH_SIZE}")

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = make_data(args.rows)
    data_s = time.perf_counter() - t0
    names = [n for n in VARIANTS if args.compile or n != "nnfin-compile"]
    steps = math.ceil(args.rows / BATCH_SIZE)
    epoch_flops = flops_per_row() * args.rows
    print(f"torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}; {args.rows} rows x {IN_DIM} inputs "
          f"(Black-Scholes call, data built in {data_s:.1f} s), 4x400 ReLU, batch {BATCH_SIZE} "
          f"({steps} steps/epoch), Adam lr {LR:g}; {args.repeats} timed epochs per variant",
          flush=True)

    # the last batch as short as in the timed epochs, so compiled graphs cover both batch sizes
    warm_rows = WARMUP_BATCHES * BATCH_SIZE + args.rows % BATCH_SIZE
    warm_data = make_data(warm_rows)
    warmup: dict[str, dict[str, float]] = {}
    for name in names:  # two small epochs: lazy initialisation, compilation
        run = make_run(name, warm_data, 2)
        (first_s, _), (second_s, _) = run.epoch(), run.epoch()
        warmup[name] = {"first_s": first_s, "second_s": second_s, "extra_s": first_s - second_s}
        print(f"  warm-up  {name:<14} {warm_rows} rows: 1st epoch {first_s:.2f} s, 2nd {second_s:.2f} s",
              flush=True)

    runs = {name: make_run(name, data, args.repeats) for name in names}
    raw: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    sgemm_raw = [measure_sgemm()]  # before every timed epoch, and after the last one
    for rep in range(args.repeats):
        shift = rep % len(names)  # rotate the order, so no variant always follows the same one
        for name in names[shift:] + names[:shift]:
            sec, loss = runs[name].epoch()
            sgemm_raw.append(measure_sgemm())
            before, after = sgemm_raw[-2], sgemm_raw[-1]
            peak_i = (best_mm(before) + best_mm(after)) / 2
            gemm_i = (before["gemm_step"] + after["gemm_step"]) / 2
            raw[name].append({"time_s": sec, "train_loss": loss, "peak_gflops": peak_i,
                              "gemm_step_gflops": gemm_i,
                              "fraction_of_peak": epoch_flops / sec / 1e9 / peak_i})
            print(f"  repeat {rep + 1}: {name:<14} {sec:8.2f} s  loss {loss:.3e}  sgemm peak around it "
                  f"{peak_i:.1f} GFLOP/s -> {raw[name][-1]['fraction_of_peak']:.1%} of peak", flush=True)

    sgemm = {k: statistics.median(s[k] for s in sgemm_raw) for k in sgemm_raw[0]}
    peak = statistics.median(best_mm(s) for s in sgemm_raw)
    gemm_only_s = epoch_flops / (sgemm["gemm_step"] * 1e9)
    gemm_frac = statistics.median(s["gemm_step"] / best_mm(s) for s in sgemm_raw)
    scale = FULL_ROWS / args.rows

    summary: dict[str, dict[str, Any]] = {}
    base = raw["dataloader"]
    for name in names:
        times = [r["time_s"] for r in raw[name]]
        med = statistics.median(times)
        summary[name] = {
            "what": VARIANTS[name], "epoch_s": med, "epoch_s_min": min(times),
            "epoch_s_max": max(times), "epoch_s_1m": med * scale, "ms_per_step": med / steps * 1e3,
            "gflops": epoch_flops / med / 1e9,
            "fraction_of_peak": statistics.median(r["fraction_of_peak"] for r in raw[name]),
            "speedup_vs_dataloader": statistics.median(
                b["time_s"] / r["time_s"] for b, r in zip(base, raw[name], strict=True)),
            "warmup_extra_s": warmup[name]["extra_s"],
            "train_loss_last": raw[name][-1]["train_loss"],
        }

    print()
    for name in names:
        print(f"  {name:<14} {VARIANTS[name]}")
    print(f"sgemm GFLOP/s, median of {len(sgemm_raw)} measurements (before each timed epoch and after "
          "the last): " + ", ".join(f"{k} {v:.1f}" for k, v in sgemm.items() if k != "gemm_step")
          + f"; peak (each measurement's best shape, median) {peak:.1f}")
    print(f"GEMM-only (one step's products alone, {sgemm['gemm_step']:.1f} GFLOP/s): "
          f"{gemm_only_s:.2f} s per epoch = {gemm_only_s / steps * 1e3:.2f} ms per step; "
          f"counted FLOPs: {flops_per_row() / 1e6:.3f} MFLOP/row, {epoch_flops / 1e12:.3f} TFLOP/epoch")
    rows_note = "" if args.rows == FULL_ROWS else f" | {'1M-row s':>9}"
    header = (f"{'variant':<14} | {'epoch s':>8} | {'[min, max]':>15}{rows_note} | {'ms/step':>7} | "
              f"{'GFLOP/s':>7} | {'of peak':>7} | {'speedup':>7} | {'warm-up +s':>10} | "
              f"{'train loss':>10}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        spread = f"[{s['epoch_s_min']:.2f}, {s['epoch_s_max']:.2f}]"
        full = "" if args.rows == FULL_ROWS else f" | {s['epoch_s_1m']:>9.2f}"
        print(f"{name:<14} | {s['epoch_s']:>8.2f} | {spread:>15}{full} | {s['ms_per_step']:>7.2f} | "
              f"{s['gflops']:>7.1f} | {s['fraction_of_peak']:>7.1%} | {s['speedup_vs_dataloader']:>6.2f}x | "
              f"{s['warmup_extra_s']:>10.2f} | {s['train_loss_last']:>10.3e}")
    full = "" if args.rows == FULL_ROWS else f" | {gemm_only_s * scale:>9.2f}"
    base_s = summary["dataloader"]["epoch_s"]
    print(f"{'GEMM-only':<14} | {gemm_only_s:>8.2f} | {'':>15}{full} | {gemm_only_s / steps * 1e3:>7.2f} | "
          f"{sgemm['gemm_step']:>7.1f} | {gemm_frac:>7.1%} | {base_s / gemm_only_s:>6.2f}x | {'':>10} | ")
    print(f"epoch s: median of {args.repeats} timed epochs (after the warm-up); speedup: dataloader epoch / "
          "variant epoch, median over repeats (goal >= 1.3x); of peak: counted FLOP/s of an epoch / "
          "the sgemm peak measured just before and after it, median over epochs (goal >= 85%); "
          "warm-up +s: first warm-up epoch minus the second (one-time cost: initialisation, compilation); "
          "train loss: mean MSE (scaled units) of the last epoch")
    if args.compile:
        w = warmup["nnfin-compile"]
        print(f"nnfin-compile: compile time ~{w['extra_s']:.2f} s (first {warm_rows}-row warm-up epoch "
              f"{w['first_s']:.2f} s, second {w['second_s']:.2f} s)")
    if args.rows != FULL_ROWS:
        print(f"ran {args.rows} rows, not 1M: '1M-row s' is the epoch time scaled by {scale:.3g}")
    noisy = [n for n, s in summary.items() if s["epoch_s_max"] > 1.3 * s["epoch_s_min"]]
    if noisy:
        load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "busy"
        print(f"warning: the slowest epoch of {', '.join(noisy)} took over 1.3x its fastest ({load} on "
              f"{default_threads()} CPUs); other processes compete for the cores")

    result = {"torch": torch.__version__, "threads": args.threads, "rows": args.rows,
              "repeats": args.repeats, "batch_size": BATCH_SIZE, "steps_per_epoch": steps,
              "flops_per_row": flops_per_row(), "epoch_flops": epoch_flops,
              "machine": platform.platform(), "sgemm_gflops": sgemm, "sgemm_raw": sgemm_raw,
              "peak_gflops": peak, "gemm_only_epoch_s": gemm_only_s,
              "summary": summary, "warmup": warmup, "raw": raw}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
