"""TensorBoard logs of a run, with ``torch.utils.tensorboard.SummaryWriter``.

:class:`TensorBoardCallback` writes, into ``<run>/tensorboard/``, every epoch's logged values as
scalars (``train_loss``, ``val_loss``, ``lr``, ... under the same names as ``history.csv``),
histograms of the weights and of their gradients (``weights/<name>``, ``gradients/<name>``)
every ``every`` epochs, and the model graph once. ``[train] tensorboard = true`` or
``nnfin fit --tensorboard`` adds it. :func:`write_hparams` records one trial's hyperparameters
and results for TensorBoard's HPARAMS tab.

TensorBoard is an optional extra: ``pip install 'nnfin[tensorboard]'``.

>>> cb = TensorBoardCallback("runs/my-run/tensorboard", every=10)  # doctest: +SKIP
>>> # then: tensorboard --logdir runs
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnfin.errors import ConfigError
from nnfin.train.callbacks import Callback

if TYPE_CHECKING:
    from nnfin.train.loop import Trainer

INSTALL_HINT = "pip install 'nnfin[tensorboard]'"
_NOT_SCALARS = ("epoch", "step", "network")  # the x axis and the network's index, not values


def summary_writer_class(what: str = "[train] tensorboard = true") -> type:
    """``SummaryWriter``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"{what} needs the tensorboard package, which is not installed; "
                          f"install it with: {INSTALL_HINT}") from None
    return SummaryWriter


class TensorBoardCallback(Callback):
    """Scalars every epoch, weight and gradient histograms every ``every`` epochs, the graph.

    Gradients are those of the last mini-batch of the epoch. A resumed run purges events past
    the epoch it resumes from, so its curves continue without overlap. On a stack of networks
    (:class:`~nnfin.train.stack.engine.StackTrainer`) each network's scalars go under
    ``network_<job>/`` (its logs' ``"network"``); a stack has no module to draw or histogram.
    """

    def __init__(self, log_dir: str | Path, *, every: int = 10, graph: bool = True) -> None:
        self.writer_class = summary_writer_class()  # fail before training starts
        self.log_dir, self.every, self.graph = Path(log_dir), every, graph
        self.writer: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        start = trainer.state.epoch  # > 0 when resumed: drop events logged after the checkpoint
        self.writer = self.writer_class(str(self.log_dir), purge_step=start + 1 if start else None)
        if self.graph and start == 0 and _module(trainer) is not None:
            self._add_graph(trainer)

    def _add_graph(self, trainer: Trainer) -> None:
        """Trace the model on a few training rows; a model that cannot be traced is skipped."""
        x = trainer.x_train[:2]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.writer.add_graph(trainer.model, x)
        except Exception as exc:  # tracing is best effort: the scalars matter more
            warnings.warn(f"TensorBoard: model graph not written ({type(exc).__name__}: {exc})",
                          stacklevel=2)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        epoch = int(logs["epoch"])
        prefix = f"network_{int(logs['network'])}/" if "network" in logs else ""
        for key, value in logs.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                self.writer.add_scalar(prefix + key, value, epoch)
        model = _module(trainer)
        if model is not None and (epoch % self.every == 0 or epoch == 1):
            self.histograms(model, epoch)

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        for name, p in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)
            if p.grad is not None and torch.isfinite(p.grad).all():
                self.writer.add_histogram(f"gradients/{name}", p.grad.detach().float().cpu(), step)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            model = _module(trainer)
            if model is not None and trainer.state.epoch % self.every != 0 \
                    and trainer.state.status != "diverged":
                self.histograms(model, trainer.state.epoch)  # the final weights too
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _module(trainer: Any) -> torch.nn.Module | None:
    """The trainer's network (``None`` for a stack of networks)."""
    model = getattr(trainer, "model", None)
    return model if isinstance(model, torch.nn.Module) else None


def _hparam_value(value: Any) -> int | float | str | bool:
    """TensorBoard takes numbers, strings and booleans; lists and None become text."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_hparams(log_dir: str | Path, params: Mapping[str, Any], metrics: Mapping[str, float]
                  ) -> Path:
    """Record one trial for TensorBoard's HPARAMS tab: its ``params`` and final ``metrics``.

    Keys are kept as given (``"optim.lr"``, ``"model.neurons"``); values that are not numbers,
    strings or booleans are written as text. Non-finite metrics are skipped. The event file goes
    into ``log_dir`` itself, so each trial's folder holds its own record.

    >>> write_hparams("study/trial-3/tensorboard", {"optim.lr": 0.01, "model.neurons": [6, 6]},
    ...               {"cv_mse": 0.0012})  # doctest: +SKIP
    """
    writer_class = summary_writer_class("write_hparams")
    log_dir = Path(log_dir)
    hparams = {str(k): _hparam_value(v) for k, v in params.items()}
    values = {str(k): float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    writer = writer_class(str(log_dir))
    try:
        writer.add_hparams(hparams, values, run_name=".")
    finally:
        writer.close()
    return log_dir
