"""A Black–Scholes hyperparameter search, stacked against one network at a time.

Run (from the repository root)::

    .venv/bin/python benchmarks/finance_search.py                 # 8 trials x 3 folds, 30 epochs
    .venv/bin/python benchmarks/finance_search.py --epochs 10 --repeats 1   # quick look
    .venv/bin/python benchmarks/finance_search.py --part kernels  # step timing only

Part ``search`` - the search users run: ``examples/finance/bs_price_differential.toml`` shrunk
to ``--n`` samples (4 inputs: moneyness, tau, r, sigma -> V/K), a 4-32-32-32-1 softplus network,
Adam with a cosine schedule (lr -> 1e-5 over each network's own epochs) and differential
training on delta, vega, theta and rho, ``--trials`` random trials (lr log-uniform in
[3e-4, 3e-3], derivative weight in {0.3, 1, 3}, seeded) x ``--folds`` folds, ``--epochs``
epochs of batches of ``--batch-size``. Every trial is cross-validated through
:func:`nnfin.train.folds.evaluate_candidates` twice in this process: stacked (``batched``:
all trials and folds in one stack) and one network at a time through the Trainer
(``[tune] batched = false``). Wall time: median of ``--repeats`` runs each; the ratio; the
engine each trial recorded; and the largest relative difference of a fold metric (held-out
MSE, MAE, R², loss) between the two paths.

Part ``kernels`` - the stacked step for the same stack (24 networks, plain MSE training, no
derivative targets) with the hand-written kernels of :mod:`nnfin.train.stack.functional` and
with the autograd forward that differential training uses, in microseconds per step (median
of 5 rounds of ``--steps`` steps), and the differential step next to them.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch

from nnfin.config import Config, load_config
from nnfin.train.folds import CVResult, evaluate_candidates, fold_data, initial_model, make_folds
from nnfin.train.stack.engine import Job, _Stack

RECIPE = "examples/finance/bs_price_differential.toml"
KEYS = ("mse", "mae", "r2", "loss")


def trials(args: argparse.Namespace) -> list[Config]:
    """``--trials`` random draws of the search space, seeded."""
    rng = np.random.default_rng(args.seed)
    base = [f"data.n={args.n}", "data.split=[0.9, 0.05, 0.05]", "model.neurons=[32, 32, 32]",
            "model.activation=softplus", "model.init=default", f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}", "train.progress=false", "train.device=cpu",
            "optim.schedule=cosine", "optim.min_lr=1e-5", f"tune.folds={args.folds}"]
    out = []
    for _ in range(args.trials):
        lr = float(np.exp(rng.uniform(math.log(3e-4), math.log(3e-3))))
        weight = float(rng.choice([0.3, 1.0, 3.0]))
        out.append(load_config(RECIPE, [*base, f"optim.lr={lr:.6g}",
                                        f"train.derivative_weight={weight}"]))
    return out


def run_search(cfgs: list[Config], folds, batched: bool) -> tuple[float, list[CVResult]]:
    started = time.perf_counter()
    results = evaluate_candidates(cfgs, folds, batched=batched)
    return time.perf_counter() - started, results


def max_difference(a: list[CVResult], b: list[CVResult]) -> float:
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for fa, fb in zip(ra.folds, rb.folds, strict=True):
            for key in KEYS:
                x, y = fa.metrics[key], fb.metrics[key]
                worst = max(worst, abs(x - y) / max(abs(y), 1e-300))
    return worst


def part_search(args: argparse.Namespace) -> None:
    cfgs = trials(args)
    folds = make_folds(cfgs[0], args.folds)
    print(f"== search: {len(cfgs)} trials x {folds.k} folds, {args.epochs} epochs, batch "
          f"{args.batch_size}, {len(folds.x)} samples, inputs {folds.features}, derivatives "
          f"{[folds.features[i] for i in folds.dydx_index or []]}")
    times: dict[bool, list[float]] = {True: [], False: []}
    last: dict[bool, list[CVResult]] = {}
    for _ in range(args.repeats):
        for batched in (True, False):
            seconds, last[batched] = run_search(cfgs, folds, batched)
            times[batched].append(seconds)
    for batched, label in ((True, "batched"), (False, "trainer")):
        engines = sorted({r.engine for r in last[batched]})
        print(f"{label:8s}: {statistics.median(times[batched]):7.2f} s  (median of {args.repeats}: "
              + ", ".join(f"{t:.2f}" for t in times[batched]) + f")  engine: {engines}")
    print(f"note: {last[True][0].engine_note}")
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"speed-up trainer / batched: {ratio:.1f}x (goal >= 3x)")
    print(f"fold metrics ({', '.join(KEYS)}), batched vs trainer: max relative difference "
          f"{max_difference(last[True], last[False]):.2e}")
    best = min(last[True], key=lambda r: r.mean)
    print(f"best trial: lr {best.config.optim.lr:.3g}, derivative weight "
          f"{best.config.train.derivative_weight}, val_mse {best.mean:.3g}")


def part_kernels(args: argparse.Namespace) -> None:
    # the search's stack, with an epoch budget it does not reach while timed
    cfgs = trials(argparse.Namespace(**{**vars(args), "epochs": 10**6}))
    folds = make_folds(cfgs[0], args.folds)

    def stack(with_derivatives: bool) -> _Stack:
        datas = [fold_data(cfgs[0], folds, i)[0] for i in range(folds.k)]
        if not with_derivatives:  # the stack trains on derivative targets when its data has them
            for data in datas:
                data.dydx = {}
        return _Stack([Job(cfg, data, initial_model(cfg, data.in_dim, data.out_dim))
                       for cfg in cfgs for data in datas])

    def per_step(s: _Stack, autograd: bool) -> float:
        s.autograd = autograd
        rounds = []
        for _ in range(5):
            done, started = 0, time.perf_counter()
            while done < args.steps:
                before = int(s.steps[0])
                s._run_epoch()
                done += int(s.steps[0]) - before
            rounds.append((time.perf_counter() - started) / done * 1e6)
        return statistics.median(rounds)

    plain = stack(False)
    print(f"== kernels: one step of {len(plain.rows)} stacked 4-32-32-32-1 softplus networks, "
          f"batch {plain.batch} (us per step, median of 5 x {args.steps} steps)")
    manual = per_step(plain, False)
    auto = per_step(plain, True)
    differential = per_step(stack(True), True)
    print(f"plain, hand-written kernels : {manual:8.0f}")
    print(f"plain, autograd forward     : {auto:8.0f}  ({auto / manual:.2f}x the hand-written)")
    print(f"differential (autograd)     : {differential:8.0f}")
    print("plain training keeps the " + ("hand-written kernels" if manual <= auto else
                                        "autograd forward (faster here)"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["search", "kernels", "all"], default="all")
    p.add_argument("--n", type=int, default=4000, help="Black–Scholes samples")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="runs per path (median)")
    p.add_argument("--steps", type=int, default=100, help="kernels: steps per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    if args.part in ("kernels", "all"):
        part_kernels(args)
    if args.part in ("search", "all"):
        part_search(args)


if __name__ == "__main__":
    main()
