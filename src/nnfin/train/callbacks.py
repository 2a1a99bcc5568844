"""Small callbacks on the one training loop (the :class:`Callback` base lives with the loop).

A callback overrides any of ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``,
``on_batch_end`` and ``on_train_end`` (each receives the trainer) and, if it has state,
``state_dict``/``load_state_dict`` so checkpoints can resume it. To stop training, a callback
sets ``trainer.stop(reason)``: a flag, never an exception.

>>> class PrintLoss(Callback):
...     def on_epoch_end(self, trainer, logs):
...         print(logs["epoch"], logs["train_loss"])
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nnfin.errors import ConfigError
from nnfin.train.loop import Callback, Trainer

if TYPE_CHECKING:
    from nnfin.config import EarlyStoppingConfig

__all__ = ["Callback", "EarlyStopping", "MonitorError", "ProgressBar"]


class ProgressBar(Callback):
    """A rich progress bar over epochs with the latest losses."""

    def __init__(self, console=None) -> None:
        self.console = console
        self.progress: Progress | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.progress = Progress(
            TextColumn("[bold]fit[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "fit", total=trainer.max_epochs, completed=trainer.state.epoch, info=""
        )

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.progress is None:
            return
        info = f"loss {logs['train_loss']:.3e}"
        if "val_loss" in logs:
            info += f"  val {logs['val_loss']:.3e}"
        self.progress.update(self.task, completed=trainer.state.epoch, info=info)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MonitorError(ConfigError, KeyError):
    """The monitored column is not logged: a one-line :class:`ConfigError` (and a ``KeyError``)."""

    __str__ = ConfigError.__str__  # the message as is, not quoted like a KeyError's


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights.

    ``min_delta`` is absolute, or relative to the best value with ``relative=True``. Epochs
    before ``start_from_epoch`` are ignored; a non-finite value stops at once.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 20, min_delta: float = 0.0,
                 relative: bool = False, start_from_epoch: int = 0, restore_best: bool = True) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.relative, self.start_from_epoch, self.restore_best = relative, start_from_epoch, restore_best
        self.best = math.inf
        self.best_epoch = -1
        self.wait = 0
        self.best_weights: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, es: EarlyStoppingConfig, **changes: Any) -> EarlyStopping | None:
        """The callback ``[early_stopping]`` describes (``None`` when it is off): the one place
        a config becomes an EarlyStopping, for fit, cv, tune and the estimator alike.

        >>> from nnfin.config import EarlyStoppingConfig
        >>> EarlyStopping.from_config(EarlyStoppingConfig(enabled=True, patience=5)).patience
        5
        """
        if not es.enabled:
            return None
        kwargs = {"patience": es.patience, "min_delta": es.min_delta, "relative": es.relative,
                  "start_from_epoch": es.start_from_epoch, "restore_best": es.restore_best, **changes}
        return cls(es.monitor, **kwargs)

    def improved(self, value: float) -> bool:
        margin = self.min_delta * abs(self.best) if self.relative and math.isfinite(self.best) \
            else self.min_delta
        return value < self.best - margin

    def check(self, epoch: int, logs: dict[str, float]) -> tuple[bool, str]:
        """Update the state with this epoch's logs; return ``(should_stop, reason)``."""
        if self.monitor not in logs:
            known = ", ".join(sorted(logs))
            hint = ("; there are no validation rows: give [data] split a validation share or monitor "
                    "train_loss") if self.monitor.startswith("val_") else ""
            raise MonitorError(f"[early_stopping] monitor = {self.monitor!r} is not logged "
                               f"(logged: {known}){hint}")
        value = logs[self.monitor]
        if not math.isfinite(value):
            return True, f"{self.monitor} is {value} at epoch {epoch}"
        if epoch < self.start_from_epoch:
            return False, ""
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False, ""
        self.wait += 1
        if self.wait >= self.patience:
            return True, (f"{self.monitor} did not improve for {self.patience} epochs "
                          f"(best {self.best:.4e} at epoch {self.best_epoch})")
        return False, ""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        stop, reason = self.check(logs["epoch"], logs)
        if self.best_epoch == logs["epoch"] and self.restore_best:
            self.best_weights = copy.deepcopy(trainer.model.state_dict())
        if stop:
            trainer.stop(reason)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            trainer.state.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.best_weights = state["wait"], state["best_weights"]
