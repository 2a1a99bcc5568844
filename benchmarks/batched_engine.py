"""Batched training of many small networks next to nnfin's one-at-a-time loop.

Run (from the repository root)::

    .venv/bin/python benchmarks/batched_engine.py                   # both parts, 1 thread
    .venv/bin/python benchmarks/batched_engine.py --part engine     # step kernels only
    .venv/bin/python benchmarks/batched_engine.py --part sweep --epochs 50 --repeats 3

Part ``engine`` - one training step (forward, backward) of M = 60 stacked 1-w-w-1 sigmoid
networks on batches of 64 rows, for w = 6, 16, 32, four ways:

* ``bmm-manual``: ``torch.baddbmm`` per layer and the hand-written backward of
  :mod:`nnfin.train.stack.functional` (what the engine uses);
* ``bmm-autograd``: the same forward on stacked (M, in, out) weights, ``autograd.grad``;
* ``vmap``: ``torch.func.stack_module_state`` + ``vmap(functional_call)``, ``autograd.grad``;
* ``vmap-grad``: ``vmap(grad(loss of functional_call))``.

Each figure is the best of 5 rounds of 200 steps (per-thread CPU time, so other load on the
machine counts less).

Part ``sweep`` - model selection as it is used: 12 configs (widths 6/16/32 x lr 1e-3/1e-2 x
L2 0/1e-4; 1-w-w-1 sigmoid, Adam, MSE, batch 64) x 5 folds, ``--epochs`` epochs (200), on
cos(x), n = 2000 on [-pi/2, 3pi/2]: 1400 rows (nnfin's 70 % training split) cut into 5 folds
of 1120 training / 280 validation rows, scaled per fold on its training rows. ``batched``
is one :func:`nnfin.train.stack.batched.train_batched` call; ``single`` is 60 runs of nnfin's
``Trainer`` in this process, each built as nnfin builds it (``data_from_indices``, seeded
``build_model``), progress bar off, no run folder. Both see the same initial weights and batch
order, so their validation losses agree (printed). Wall time: median over ``--repeats``
(``single`` runs ``--single-repeats`` times, 1 by default: it is the slow one).

Achieved FLOP/s counts the GEMM work of the batched run (2 FLOPs per multiply-add; forward,
two backward products per layer, validation passes; real widths, padding excluded) over its
wall time, next to the machine's sgemm peak: a 2048 x 2048 ``torch.mm`` timed in the same run.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from nnfin.config import Config, load_config
from nnfin.data import data_from_indices
from nnfin.models import build_model
from nnfin.train.loop import Trainer
from nnfin.train.stack.batched import BatchedRun, train_batched
from nnfin.train.stack.functional import StackLayout, backward, flat_grads, forward, loss_and_grad

M, BATCH = 60, 64


# ------------------------------------------------------------------------ part: engine


def best_us(fn: Callable[[], object], steps: int = 200, rounds: int = 5) -> float:
    for _ in range(20):
        fn()
    best = math.inf
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(steps):
            fn()
        best = min(best, (time.thread_time() - start) / steps)
    return best * 1e6


def engine_variants(width: int) -> dict[str, float]:
    """Microseconds per forward + backward of M stacked 1-w-w-1 sigmoid networks."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(1, width), nn.Sigmoid(), nn.Linear(width, width), nn.Sigmoid(),
                          nn.Linear(width, 1)) for _ in range(M)]
    x, y = torch.randn(M, BATCH, 1), torch.randn(M, BATCH, 1)
    layout = StackLayout([1, width, width, 1])
    theta = torch.cat([torch.cat([t.reshape(-1) for lin in (n[0], n[2], n[4])
                                  for t in (lin.weight.T, lin.bias)]).unsqueeze(0) for n in nets])

    def bmm_manual():
        layers = layout.views(theta)
        out, cache = forward(layers, x, "sigmoid")
        _, g = loss_and_grad(out, y, "mse")
        return flat_grads(backward(layers, cache, g, "sigmoid"))

    stacked = [t.clone().requires_grad_(True) for t in
               (theta[:, a:b] for a, b in _cuts(layout))]
    shaped = [s.view(M, *shape) for s, shape in zip(stacked, _shapes(layout), strict=True)]

    def bmm_autograd():
        h = x
        for k in range(3):
            h = torch.baddbmm(shaped[2 * k + 1], h, shaped[2 * k])
            if k < 2:
                h = torch.sigmoid(h)
        return torch.autograd.grad((h - y).square().mean((1, 2)).sum(), stacked)

    params, _ = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    plist = list(params.values())
    batched = vmap(lambda p, xb: functional_call(base, p, (xb,)))

    def vmapped():
        out = batched(params, x)
        return torch.autograd.grad((out - y).square().mean((1, 2)).sum(), plist)

    def loss(p, xb, yb):
        return (functional_call(base, p, (xb,)) - yb).square().mean()

    per_model_grad = vmap(grad(loss))
    return {"bmm-manual": best_us(bmm_manual), "bmm-autograd": best_us(bmm_autograd),
            "vmap": best_us(vmapped), "vmap-grad": best_us(lambda: per_model_grad(params, x, y))}


def _cuts(layout: StackLayout) -> list[tuple[int, int]]:
    return [cut for w0, b0, end in layout.slices for cut in ((w0, b0), (b0, end))]


def _shapes(layout: StackLayout) -> list[tuple[int, int]]:
    dims = layout.widths
    return [shape for i, o in pairwise(dims) for shape in ((i, o), (1, o))]


def part_engine() -> None:
    print(f"\n== engine: one forward+backward of M={M} stacked 1-w-w-1 sigmoid nets, batch "
          f"{BATCH} (us per step, best of 5 x 200, thread CPU time)")
    names = ["bmm-manual", "bmm-autograd", "vmap", "vmap-grad"]
    print(f"{'width':>6} " + " ".join(f"{n:>13}" for n in names))
    for width in (6, 16, 32):
        row = engine_variants(width)
        print(f"{width:>6} " + " ".join(f"{row[n]:>13.1f}" for n in names))


# ------------------------------------------------------------------------- part: sweep


def sweep_setup(epochs: int) -> tuple[np.ndarray, np.ndarray, list, list[Config]]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-math.pi / 2, 3 * math.pi / 2, 2000).reshape(-1, 1)
    y = np.cos(x)
    parts = np.array_split(rng.permutation(2000)[:1400], 5)  # 70 % training split, 5 folds
    folds = [(np.sort(np.concatenate(parts[:k] + parts[k + 1:])), np.sort(parts[k]))
             for k in range(5)]
    cands = [load_config(None, [f"model.neurons=[{w},{w}]", f"optim.lr={lr}", f"penalty.l2={l2}",
                                "optim.name=adam", "model.activation=sigmoid", "train.batch_size=64",
                                f"train.epochs={epochs}", "train.progress=false",
                                "train.device=cpu"])
             for w in (6, 16, 32) for lr in (1e-3, 1e-2) for l2 in (0.0, 1e-4)]
    return x, y, folds, cands


def run_single(x: np.ndarray, y: np.ndarray, folds: list, cands: list[Config]) -> list[list[float]]:
    """60 Trainer runs, as a cross-validation would do them; final val loss per run."""
    out = []
    for cfg in cands:
        row = []
        for tr, va in folds:
            data = data_from_indices(x, y, tr, va, np.arange(0), features=["x"], targets=["y"])
            torch.manual_seed(cfg.train.seed)
            model = build_model(cfg.model, in_dim=1, out_dim=1)
            state = Trainer(model, data, cfg).fit()
            row.append(state.history[-1]["val_loss"])
        out.append(row)
    return out


def useful_flops(run: BatchedRun, n_val: int) -> float:
    """GEMM FLOPs of the run: 3 products per layer per training row, 1 per validation row."""
    total = 0.0
    for c, cfg in enumerate(run.configs):
        dims = [1, *cfg.model.neurons, 1]
        macs = sum(i * o for i, o in pairwise(dims))
        for result in run.results[c]:
            total += 2 * macs * (3 * BATCH * result.steps + n_val * result.epochs)
    return total


def sgemm_peak(n: int = 2048, rounds: int = 5) -> float:
    """FLOP/s of the fastest of ``rounds`` float32 ``n x n`` products (wall time)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def part_sweep(epochs: int, repeats: int, single_repeats: int, pad: bool | str) -> None:
    x, y, folds, cands = sweep_setup(epochs)
    print(f"\n== sweep: 12 configs x 5 folds x {epochs} epochs, Adam, batch {BATCH}, "
          f"cos(x) 1400 rows (1120 train / 280 val per fold)")
    batched, last = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        last = train_batched(cands, x, y, folds=folds, pad_widths=pad)
        batched.append(time.perf_counter() - start)
    print(last.plan.describe())
    single, ref = [], None
    for _ in range(single_repeats):
        start = time.perf_counter()
        ref = run_single(x, y, folds, cands)
        single.append(time.perf_counter() - start)
    t_b, t_s = statistics.median(batched), statistics.median(single)
    worst = max(abs(last.result(c, f).final_val_loss - ref[c][f]) / abs(ref[c][f])
                for c in range(len(cands)) for f in range(len(folds)))
    flops = useful_flops(last, 280)
    peak = sgemm_peak()
    print(f"batched: {t_b:8.2f} s  (median of {repeats}: {', '.join(f'{t:.2f}' for t in batched)})")
    print(f"single : {t_s:8.2f} s  (median of {single_repeats}: "
          f"{', '.join(f'{t:.2f}' for t in single)})")
    print(f"speed-up single / batched: {t_s / t_b:.1f}x")
    print(f"final val loss, batched vs single: max relative difference {worst:.1e}")
    print(f"batched GEMM work {flops / 1e9:.2f} GFLOP -> {flops / t_b / 1e9:.2f} GFLOP/s; "
          f"sgemm peak (2048^2 torch.mm) {peak / 1e9:.1f} GFLOP/s "
          f"({100 * flops / t_b / peak:.2f} % of peak)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["engine", "sweep", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="batched runs (median)")
    parser.add_argument("--single-repeats", type=int, default=1, help="60-run loops (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--pad", choices=["auto", "all", "none"], default="auto",
                        help="train_batched(pad_widths=...): 'auto', True or False")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.part in ("engine", "all"):
        part_engine()
    if args.part in ("sweep", "all"):
        pad = {"auto": "auto", "all": True, "none": False}[args.pad]
        part_sweep(args.epochs, args.repeats, args.single_repeats, pad)


if __name__ == "__main__":
    main()
