"""Per-step cost of nnfin's training loop next to the lecture's plain ``ANN_high`` loop.

Run (from the repository root)::

    .venv/bin/python benchmarks/loop_overhead.py                      # 5 repeats x 5000 steps
    .venv/bin/python benchmarks/loop_overhead.py --repeats 3 --iterations 2000 --json out.json

Every variant trains a 1-16-16-1 sigmoid MLP (``nn.Linear`` layers in ``nn.Sequential``) on
cos(x), n = 2000 on [-pi/2, 3pi/2], with Adam (lr = 1e-2), MSE loss and batches of 64, for
``--iterations`` optimizer steps. All of them use the same scaled training tensors (nnfin's
``[data]`` with ``split = [1, 0, 0]``, i.e. all 2000 rows are training rows) and start from the
same initial weights. Variants:

* ``slide``        - the lecture's loop verbatim: ``np.random.choice(N_train, 64, replace=False)``,
  ``batchX = x_train[current_index]``, ``optimizer.zero_grad()``, ``model.forward``,
  ``loss_fn(...)``, ``backward()``, ``optimizer.step()``, ``loss_values.append(loss.item())``,
  with ``torch.optim.Adam`` as constructed on the slides (PyTorch's default implementation);
* ``nnfin-choice`` - ``nnfin.fit`` with ``train.sampling = "choice"`` (a fresh uniformly random
  64-subset every step, as the slide loop draws them);
* ``nnfin-shuffle``- ``nnfin.fit`` with the default ``train.sampling = "shuffle"`` (one
  permutation per epoch cut into 64-row batches; the 32nd batch of each epoch has 16 rows).

Both nnfin variants run with ``write = False`` and the progress bar off, so no run folder,
checkpoints or plots are written; with no validation rows there is no per-epoch validation pass.

Only the training loop is timed: for the slide loop the ``for`` loop itself; for nnfin the
loop's own timer (``run.metrics["time_s"]``). The wall time of the whole ``nnfin.fit`` call
(config, data, model, loop, final metrics) is reported next to it. Each figure is the median
over ``--repeats`` runs (variants interleaved within a repeat, after one untimed warm-up).
Final losses are the MSE of each trained model on the full (scaled) training set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import nnfin
from nnfin.config import load_config
from nnfin.data import build_data
from nnfin.models import build_model

BATCH_SIZE = 64
LR = 1e-2
NEURONS = [16, 16]
BASE_OVERRIDES = [
    "data.kind=cos", "data.n=2000", "data.split=[1.0,0.0,0.0]", "data.scale=true",
    "model.kind=mlp", f"model.neurons={NEURONS}", "model.activation=sigmoid",
    "optim.name=adam", f"optim.lr={LR}",
    f"train.batch_size={BATCH_SIZE}", "train.device=cpu", "train.progress=false",
]
VARIANTS = {
    "slide": "lecture loop: np.random.choice per step, torch.optim.Adam (default impl.), "
             "loss.item() every step",
    "nnfin-choice": "nnfin.fit, sampling='choice' (random 64-subset per step), no val/test split",
    "nnfin-shuffle": "nnfin.fit, sampling='shuffle' (randperm per epoch), no val/test split",
}


class ANN_high(nn.Module):
    """The lecture's high-level network, as on the slides."""

    def __init__(self, in_dim: int = 1, out_dim: int = 1, neurons: list[int] | None = None,
                 act_fn: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.neurons = neurons if neurons is not None else [6, 6]
        self.act_fn = act_fn()
        self.layer1 = nn.Linear(self.in_dim, self.neurons[0])
        self.layer2 = nn.Linear(self.neurons[0], self.neurons[1])
        self.layer3 = nn.Linear(self.neurons[1], self.out_dim)
        # put all the layers together in order
        self.forwardpass = nn.Sequential(self.layer1, self.act_fn, self.layer2, self.act_fn,
                                         self.layer3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forwardpass(x)
        return y


def overrides_for(sampling: str, iterations: int, seed: int) -> list[str]:
    return [*BASE_OVERRIDES, f"train.sampling={sampling}", f"train.iterations={iterations}",
            f"train.seed={seed}"]


def initial_model(seed: int) -> ANN_high:
    """``ANN_high`` holding the initial weights ``nnfin.fit`` starts from with this seed."""
    cfg = load_config(None, overrides_for("choice", 1, seed))
    torch.manual_seed(seed)
    reference = build_model(cfg.model, in_dim=1, out_dim=1)
    model = ANN_high(1, 1, NEURONS, torch.nn.Sigmoid)
    ref_linears = [m for m in reference.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for mine, theirs in zip([model.layer1, model.layer2, model.layer3], ref_linears, strict=True):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return model


@torch.no_grad()
def train_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.mse_loss(model(x).double(), y.double()))


def run_slide(x_train: torch.Tensor, y_train: torch.Tensor, iterations: int,
              seed: int) -> dict[str, Any]:
    """The lecture's high-level training loop; only the ``for`` loop is timed."""
    model = initial_model(seed)
    np.random.seed(seed)
    N_train = x_train.shape[0]
    batch_size = BATCH_SIZE
    num_iterations = iterations
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.MSELoss()
    loss_values = []

    start = time.perf_counter()
    for _k in range(num_iterations):
        current_index = np.random.choice(N_train, batch_size, replace=False)
        batchX = x_train[current_index]
        batchY = y_train[current_index].view(batch_size, 1)
        optimizer.zero_grad()
        batchY_pred = model.forward(batchX)
        loss = loss_fn(batchY_pred, batchY)
        loss.backward()
        optimizer.step()
        loss_values.append(loss.item())
    loop_s = time.perf_counter() - start

    return {"loop_s": loop_s, "wall_s": loop_s, "steps": num_iterations,
            "train_mse": train_mse(model, x_train, y_train)}


def run_nnfin(sampling: str, x_train: torch.Tensor, y_train: torch.Tensor, iterations: int,
              seed: int) -> dict[str, Any]:
    """``nnfin.fit``; the loop's own timer and the wall time of the whole call."""
    start = time.perf_counter()
    run = nnfin.fit(None, overrides=overrides_for(sampling, iterations, seed), write=False)
    wall_s = time.perf_counter() - start
    steps = int(run.metrics["steps"])
    if steps != iterations or run.metrics["status"] != "finished":
        raise RuntimeError(f"nnfin stopped early: {run.metrics['status']} after {steps} steps")
    return {"loop_s": float(run.metrics["time_s"]), "wall_s": wall_s, "steps": steps,
            "train_mse": train_mse(run.model, x_train, y_train),
            "last_epoch_train_loss": float(run.history["train_loss"].iloc[-1])}


def run_variant(name: str, x_train: torch.Tensor, y_train: torch.Tensor, iterations: int,
                seed: int) -> dict[str, Any]:
    if name == "slide":
        return run_slide(x_train, y_train, iterations, seed)
    return run_nnfin(name.removeprefix("nnfin-"), x_train, y_train, iterations, seed)


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median)")
    parser.add_argument("--iterations", type=int, default=5000, help="optimizer steps per run")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch.set_num_threads for every variant (default: all CPUs)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write results here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = build_data(load_config(None, overrides_for("choice", 1, 0)).data, device="cpu",
                      dtype="float32")
    x_train, y_train = data.split("train")

    for name in VARIANTS:  # warm-up: lazy kernel/JIT/import costs are not part of a step
        run_variant(name, x_train, y_train, min(200, args.iterations), seed=0)

    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for rep in range(args.repeats):
        for name in VARIANTS:
            raw[name].append(run_variant(name, x_train, y_train, args.iterations, seed=rep))

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in raw[name])

    base_us = med("slide", "loop_s") / args.iterations * 1e6
    summary: dict[str, dict[str, Any]] = {}
    for name, what in VARIANTS.items():
        loop_us = med(name, "loop_s") / args.iterations * 1e6
        wall_us = med(name, "wall_s") / args.iterations * 1e6
        summary[name] = {
            "what": what, "loop_us_per_step": loop_us, "wall_us_per_step": wall_us,
            "loop_us_min": min(r["loop_s"] for r in raw[name]) / args.iterations * 1e6,
            "loop_us_max": max(r["loop_s"] for r in raw[name]) / args.iterations * 1e6,
            "ratio_loop": loop_us / base_us, "ratio_wall": wall_us / base_us,
            "train_mse": med(name, "train_mse"),
        }

    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}"
          f"; {args.iterations} steps x batch {BATCH_SIZE}, N_train = {x_train.shape[0]}, "
          f"median of {args.repeats} repeats")
    for name, what in VARIANTS.items():
        print(f"  {name:<14} {what}")
    header = (f"{'variant':<14} {'loop us/step':>12} {'[min, max]':>16} {'fit() wall us/step':>18} "
              f"{'ratio loop':>10} {'ratio wall':>10} {'train MSE':>10}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        spread = f"[{s['loop_us_min']:.1f}, {s['loop_us_max']:.1f}]"
        wall = "-" if name == "slide" else f"{s['wall_us_per_step']:.1f}"
        print(f"{name:<14} {s['loop_us_per_step']:>12.1f} {spread:>16} {wall:>18} "
              f"{s['ratio_loop']:>10.3f} {s['ratio_wall']:>10.3f} {s['train_mse']:>10.2e}")
    print("ratio = nnfin / slide per-step time (goal <= 1.0, aim 0.67); train MSE: final model on "
          "the full scaled training set, median over repeats")
    noisy = [name for name, s in summary.items() if s["loop_us_max"] > 1.5 * s["loop_us_min"]]
    if noisy:
        load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "busy"
        print(f"warning: the slowest repeat of {', '.join(noisy)} took over 1.5x its fastest ({load} "
              f"on {default_threads()} CPUs); other processes compete for the cores - rerun on a "
              "quiet machine or with --threads 1")

    result = {"torch": torch.__version__, "threads": args.threads, "iterations": args.iterations,
              "repeats": args.repeats, "batch_size": BATCH_SIZE, "n_train": int(x_train.shape[0]),
              "machine": platform.platform(), "summary": summary, "raw": raw}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
