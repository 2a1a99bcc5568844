"""Learning-rate range test (L. Smith, 2017; fastai's ``lr_find`` is the reference).

From a copy of the initial state, train for ``steps`` mini-batches while the learning rate grows
exponentially from ``start`` to ``end``; record the loss, smooth it (exponential moving average,
``beta = 0.98``, bias-corrected) and stop once the smoothed loss exceeds 4x the best one. The
suggested learning rate is where the smoothed loss falls fastest against log(lr) ("steepest",
fastai's ``steep``); the lr of the minimum divided by 10 (fastai's ``minimum``) is reported too.
As fastai does, the first 10% of the steps and the last 5 are left out of the suggestions.
The model and optimizer passed in are left untouched: the test trains deep copies.

>>> import nnfin.app.lr_find as lf
>>> res = lf.lr_find(overrides=["data.n=256"], write=False)  # doctest: +SKIP
>>> f"--set optim.lr={res.suggestion:.2g}"  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from nnfin.config import Config, PenaltyConfig, load_config
from nnfin.errors import ConfigError
from nnfin.train.loop import Callback, Trainer


@dataclass
class LRFindResult:
    """Learning rates tried, raw and smoothed losses, and the suggestions."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float  # steepest descent of the smoothed loss against log(lr)
    min_div_10: float  # lr of the smallest smoothed loss, divided by 10
    stop_reason: str
    plot: Path | None = None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed})


class LRRangeTest(Callback):
    """The range test as a callback on the training loop: before each step the learning rate is
    ``start * gamma**i`` (``gamma`` takes it to ``end`` at the last step); after it the step's
    loss is recorded and smoothed, and the loop stops once the smoothed loss exceeds
    ``diverge`` x its best (or the loss is not finite). Everything else - batches, loss,
    penalties, derivative targets - is the loop's own.

    >>> from nnfin.app.fit import build_trainer  # doctest: +SKIP
    >>> test = LRRangeTest(steps=100)  # doctest: +SKIP
    >>> trainer, _ = build_trainer(cfg, write=False, callbacks=[test])  # doctest: +SKIP
    >>> trainer.fit(); test.result().suggestion  # doctest: +SKIP
    """

    def __init__(self, *, start: float = 1e-7, end: float = 10.0, steps: int = 100, beta: float = 0.98,
                 diverge: float = 4.0) -> None:
        if not (math.isfinite(start) and start > 0):
            raise ConfigError(f"lr-find start = {start!r} must be a positive number")
        if not (math.isfinite(end) and end > start):
            raise ConfigError(f"lr-find end = {end!r} must be above start = {start!r}")
        if steps < 2:
            raise ConfigError(f"lr-find steps = {steps!r} must be at least 2")
        self.start, self.steps, self.beta, self.diverge = start, steps, beta, diverge
        self.gamma = (end / start) ** (1.0 / (steps - 1))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.reason = f"ran all {steps} steps"
        self._avg, self._best = 0.0, math.inf

    def lr_at(self, i: int) -> float:
        return self.start * self.gamma**i

    def record(self, lr: float, value: float) -> str | None:
        """Add one step's loss at ``lr``; returns why to stop, or ``None`` to go on."""
        i = len(self.lrs)
        if not math.isfinite(value):
            return f"loss became {value} at lr = {lr:.3g} (step {i + 1})"
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        smooth = self._avg / (1 - self.beta ** (i + 1))
        self.lrs.append(lr)
        self.losses.append(value)
        self.smoothed.append(smooth)
        self._best = min(self._best, smooth)
        if smooth > self.diverge * self._best:
            return f"smoothed loss exceeded {self.diverge:g}x its best at lr = {lr:.3g} (step {i + 1})"
        return None

    @staticmethod
    def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    def on_train_begin(self, trainer: Trainer) -> None:
        if trainer.uses_closure:
            raise ConfigError("[optim] name = 'lbfgs': the range test needs a first-order optimizer "
                              "(gd, sgd, adam, adamw, rmsprop)")
        self._set_lr(trainer.optimizer, self.lr_at(0))

    def on_batch_end(self, trainer: Trainer) -> None:
        reason = self.record(trainer.lr, float(trainer.epoch_losses[-1]))
        if reason is not None:
            self.reason = reason
            trainer.stop(reason, "finished", now=True)
        elif len(self.lrs) < self.steps:
            self._set_lr(trainer.optimizer, self.lr_at(len(self.lrs)))

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.state.status == "diverged" and trainer.epoch_losses:  # stopped by the loop
            self.reason = self.record(trainer.lr, float(trainer.epoch_losses[-1])) or self.reason

    def result(self) -> LRFindResult:
        lrs, smoothed = np.array(self.lrs), np.array(self.smoothed)
        steep, low = suggestions(lrs, smoothed)
        return LRFindResult(lrs, np.array(self.losses), smoothed, steep, low, self.reason)


def range_test(model: nn.Module, optimizer: torch.optim.Optimizer,
               batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
               loss_fn: Any = F.mse_loss, penalty: PenaltyConfig | None = None,
               start: float = 1e-7, end: float = 10.0, steps: int = 100, beta: float = 0.98,
               diverge: float = 4.0) -> LRFindResult:
    """The range test on any module, optimizer and batches (deep copies: the inputs stay as they
    are), with the same schedule, smoothing and stop rule as :class:`LRRangeTest`.

    ``batches`` yields ``(x, y)`` mini-batches (it is cycled through as needed); ``penalty``
    adds the config's L1/L2 terms before ``backward()`` as training does. :func:`lr_find` runs
    the test on the training loop itself, for a config.
    """
    from nnfin.train.loop import capture_rng, restore_rng
    from nnfin.train.losses import make_penalty

    test = LRRangeTest(start=start, end=end, steps=steps, beta=beta, diverge=diverge)
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ConfigError("[optim] name = 'lbfgs': the range test needs a first-order optimizer "
                          "(gd, sgd, adam, adamw, rmsprop)")
    work_model, work_opt = copy.deepcopy((model, optimizer))  # one memo: the copy steps the copy
    penalty_fn = make_penalty(penalty, work_model) if penalty is not None else None
    rng = capture_rng()
    stream = _cycle(batches)
    work_model.train()
    try:
        for i in range(steps):
            lr = test.lr_at(i)
            LRRangeTest._set_lr(work_opt, lr)
            xb, yb = next(stream)
            work_opt.zero_grad(set_to_none=True)
            loss = loss_fn(work_model(xb), yb)
            (loss + penalty_fn() if penalty_fn is not None else loss).backward()
            work_opt.step()
            reason = test.record(lr, float(loss.detach()))
            if reason is not None:
                test.reason = reason
                break
    finally:
        restore_rng(rng)  # the caller's random streams go on as if no test had run
    return test.result()


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ConfigError("lr-find: the data gives no mini-batches")


def suggestions(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """``(steepest, min/10)`` on the smoothed curve, leaving out the first 10% and last 5 points.

    >>> lrs = np.logspace(-7, 1, 100)
    >>> loss = 1 / (1 + np.exp(4 * (np.log10(lrs) + 2)))  # falls fastest at lr = 1e-2
    >>> round(float(np.log10(suggestions(lrs, loss)[0])), 1)
    -2.0
    """
    if len(lrs) == 0:
        return math.nan, math.nan
    lo, hi = len(lrs) // 10, len(lrs) - 5
    if hi - lo < 3:
        lo, hi = 0, len(lrs)
    lr, loss = lrs[lo:hi], smoothed[lo:hi]
    low = float(lr[int(np.argmin(loss))] / 10)
    if len(lr) < 2:
        return float(lr[0]), low
    # slope over a window of w steps (a factor ~3 in lr at 100 steps), so the noise of a flat
    # stretch does not outbid the real descent; the suggestion is the window's middle
    w = max(1, min(len(lr) // 20, len(lr) - 1))
    slope = (loss[w:] - loss[:-w]) / (np.log(lr[w:]) - np.log(lr[:-w]))
    return float(lr[int(np.argmin(slope)) + w // 2]), low


def figure(res: LRFindResult, title: str = "learning-rate range test") -> Any:
    """Loss against learning rate on log axes, with both suggestions marked."""
    import matplotlib.pyplot as plt

    from nnfin import plots  # selects the Agg backend before pyplot is imported

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(res.lrs, res.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(res.lrs, res.smoothed, color="tab:blue", lw=2, label="smoothed")
    marks = ((res.suggestion, "steepest", "tab:red"), (res.min_div_10, "min/10", "tab:green"))
    for lr, label, color in marks:
        if math.isfinite(lr):
            y = float(np.interp(np.log(lr), np.log(res.lrs), res.smoothed))
            ax.scatter([lr], [y], color=color, zorder=3, label=f"{label}: {lr:.2g}")
    ax.set_xscale("log")
    if len(res.smoothed) and (res.smoothed > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, y=1.0)  # y: right above the panel, not searched for at each draw
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return plots.layout(fig)


def lr_find(config: Config | dict | str | Path | None = None, *, overrides: str | Sequence[str] = (),
            start: float = 1e-7, end: float = 10.0, steps: int = 100, plot: str | Path | None = None,
            write: bool = True, force: bool = False) -> LRFindResult:
    """The range test on the training loop of a config: its model, optimizer, mini-batches, loss,
    penalties and derivative targets (:class:`LRRangeTest` sets the learning rate each step).

    Writes ``plot`` (default ``<run.root>/lr-find-<time>.png``) and a CSV of the same name
    beside it; an existing plot or CSV is refused (before the test runs) unless ``force``.
    """
    from nnfin import files
    from nnfin.app.fit import build_trainer

    cfg = load_config(config, [*overrides, "train.progress=false", "optim.schedule=none",
                               "early_stopping.enabled=false", "train.tensorboard=false",
                               f"train.iterations={max(int(steps), 1)}"])
    if cfg.optim.name == "lbfgs":
        raise ConfigError("[optim] name = 'lbfgs': the range test needs a first-order optimizer "
                          "(gd, sgd, adam, adamw, rmsprop)")
    path = None
    if write:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(plot) if plot else _free(Path(cfg.run.root) / f"lr-find-{stamp}.png")
        if path.suffix.lower() in ("", ".csv"):
            raise ConfigError(f"--plot {str(path)!r} needs an image suffix such as .png, .pdf or .svg "
                              "(the CSV is written beside it)")
        for target, field in ((path, "--plot"), (path.with_suffix(".csv"), "--plot's CSV")):
            files.check_target(target, force=force, field=field)  # refuse before the test runs
    test = LRRangeTest(start=start, end=end, steps=steps)
    from nnfin.train.loop import capture_rng, restore_rng

    rng = capture_rng()
    try:  # seeded exactly as nnfin fit seeds; the loop's own batches, loss and penalties
        trainer, _ = build_trainer(cfg, write=False, callbacks=[test])
        trainer.fit()
    finally:
        restore_rng(rng)  # the caller's random streams go on as if no test had run
    res = test.result()
    if path is not None:
        from nnfin import plots

        files.write_frame(path.with_suffix(".csv"), res.to_frame(), force=force, field="--plot's CSV")
        plots.save(figure(res), path, force=force, field="--plot")
        res.plot = path
    return res


def _free(path: Path) -> Path:
    k, out = 1, path
    while out.exists():
        k += 1
        out = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return out
