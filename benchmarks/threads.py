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
"""

from __future__ import annotations

import argparse
import os
import statistics

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
