"""Milliseconds per training step with one CPU thread and with torch's default, by network size.

Run (from the repository root)::

    .venv/bin/python benchmarks/threads.py               # 3 repeats, alternated
    .venv/bin/python benchmarks/threads.py --repeats 5

Each figure is ``nnfin.fit``'s own loop time over its steps (``write = False``), median of the
repeats, the thread counts alternated within a repeat in one process. The load average is
printed: on a quiet machine the default threads help only the large network; when other
processes compete for the cores, OpenMP threads that wait for each other slow every size down.
``[train] threads = "auto"`` picks one thread below ``nnfin.device.SMALL_STEP`` multiply-adds
per forward pass (parameters x batch rows) and above it torch's default less the busy cores.

``--wait-policy`` compares OpenMP's two wait policies in fresh processes (``OMP_WAIT_POLICY`` is
read when torch loads): ``ACTIVE`` (OpenMP's default: threads spin for the next operation) and
``PASSIVE`` (they sleep; what ``import nnfin`` sets unless the user chose) on two workloads with
torch's default threads: 126 Heston COS deltas of 60 options (small operations, as in the
report's hedging test) and 2 epochs of the 4x400 network with batches of 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import nnfin
from nnfin.device import training_threads

CASES = [  # (label, neurons, n rows, batch size, epochs)
    ("1-6-6-1, batch 64", [6, 6], 2000, 64, 10),
    ("1-64-64-1, batch 64", [64, 64], 2000, 64, 10),
    ("1-4x400-1, batch 1024", [400, 400, 400, 400], 20000, 1024, 2),
]


def ms_per_step(neurons: list[int], n: int, batch: int, epochs: int, threads: int) -> float:
    run = nnfin.fit({"data": {"n": n, "split": [1.0, 0.0, 0.0]},
                     "model": {"neurons": neurons},
                     "train": {"epochs": epochs, "batch_size": batch, "progress": False,
                               "threads": threads, "device": "cpu"}}, write=False)
    return 1e3 * run.metrics["time_s"] / run.metrics["steps"]


def child_wait_policy() -> dict[str, float]:
    """Seconds of the two workloads in this process (its OMP_WAIT_POLICY)."""
    import numpy as np

    from nnfin.finance.heston import heston_cos_sensitivities

    m = np.linspace(0.8, 1.2, 60)
    started = time.perf_counter()
    for _ in range(126):
        heston_cos_sensitivities(m, 0.6, 0.05, rho=-0.6, kappa=1.8, vbar=0.15, gamma=0.25, v0=0.15,
                                 n_terms=256, big_l=12.0)
    cos = time.perf_counter() - started
    started = time.perf_counter()
    nnfin.fit({"data": {"n": 8192, "split": [1.0, 0.0, 0.0]},
               "model": {"neurons": [400, 400, 400, 400]},
               "train": {"epochs": 2, "batch_size": 1024, "progress": False, "threads": 2,
                         "device": "cpu"}}, write=False)
    return {"cos deltas": cos, "4x400 fit": time.perf_counter() - started}


def wait_policies(repeats: int) -> None:
    times: dict[str, list[dict[str, float]]] = {"ACTIVE": [], "PASSIVE": []}
    for _ in range(repeats):
        for policy in times:
            env = {**os.environ, "OMP_WAIT_POLICY": policy}
            out = subprocess.run([sys.executable, __file__, "--child-wait-policy"], env=env,
                                 capture_output=True, text=True, check=True).stdout
            times[policy].append(json.loads(out.strip().splitlines()[-1]))
    print(f"OMP_WAIT_POLICY, torch's default threads, fresh processes, median of {repeats} "
          f"(load average {os.getloadavg()[0]:.1f})")
    for work in times["ACTIVE"][0]:
        a = statistics.median(t[work] for t in times["ACTIVE"])
        p = statistics.median(t[work] for t in times["PASSIVE"])
        print(f"  {work:<12} ACTIVE {a:7.2f} s   PASSIVE {p:7.2f} s   ACTIVE / PASSIVE {a / p:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait-policy", action="store_true", help="compare OMP_WAIT_POLICY values")
    parser.add_argument("--child-wait-policy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_wait_policy:
        print(json.dumps(child_wait_policy()))
        return
    if args.wait_policy:
        wait_policies(args.repeats)
        return
    default = torch.get_num_threads()
    counts = sorted({1, default})
    print(f"torch {torch.__version__}, default {default} thread(s), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; median of {args.repeats}")
    print(f"{'network':<24}" + "".join(f"{f'{c} thread(s)':>14}" for c in counts)
          + f"{'auto picks':>12}")
    for label, neurons, n, batch, epochs in CASES:
        times: dict[int, list[float]] = {c: [] for c in counts}
        for _ in range(args.repeats):
            for c in counts:
                times[c].append(ms_per_step(neurons, n, batch, epochs, c))
        params = sum(a * b + b for a, b in zip([1, *neurons], [*neurons, 1], strict=False))
        pick = training_threads("auto", work=params * batch, device=torch.device("cpu"))
        print(f"{label:<24}" + "".join(f"{statistics.median(times[c]):>11.2f} ms" for c in counts)
              + f"{pick or default:>12}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
