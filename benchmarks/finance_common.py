"""Shared pieces of the finance benchmarks: training within a wall-clock budget.

:class:`TimeBudget` turns the recipe's epoch-based cosine decay (lr 1e-3 -> 1e-5) into one
over the training time: after every step it sets ``lr = min_lr + (lr0 - min_lr) (1 + cos(pi t/T)) / 2``
with ``t`` the seconds trained so far, and it stops training once ``t >= T``. So every variant
gets the same budget and ends its schedule at ``min_lr``, however fast its steps are.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import torch

import nnfin
from nnfin.train.callbacks import Callback


class TimeBudget(Callback):
    """Cosine learning rate over ``seconds`` of training, then stop (after the current epoch)."""

    def __init__(self, seconds: float, lr0: float = 1e-3, min_lr: float = 1e-5) -> None:
        self.seconds, self.lr0, self.min_lr = seconds, lr0, min_lr
        self.start = 0.0

    def on_train_begin(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    def on_batch_end(self, trainer: Any) -> None:
        frac = min(1.0, (time.perf_counter() - self.start) / self.seconds)
        lr = self.min_lr + (self.lr0 - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        if frac >= 1.0 and not trainer.stopping:
            trainer.stop(f"time budget of {self.seconds:.0f} s", "finished")


def train_within(overrides: Sequence[str], seconds: float, *, config: str | None = None,
                 lr0: float = 1e-3, min_lr: float = 1e-5) -> Any:
    """``nnfin.fit`` (no run folder) of ``config`` + ``overrides`` for ``seconds`` of training."""
    budget = TimeBudget(seconds, lr0, min_lr)
    over = [*overrides, "optim.schedule=none", f"optim.lr={lr0}", "train.epochs=1000000",
            "train.progress=false", "train.device=cpu"]
    return nnfin.fit(config, overrides=over, callbacks=[budget], write=False)


def set_threads(threads: int) -> None:
    """``threads > 0``: use that many intra-op threads (1 is far faster on a busy machine,
    where OpenMP threads spin against other processes); 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load:.1f} at the start")
