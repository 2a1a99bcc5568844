"""Per-network learning-rate schedules of a stack: the Trainer's torch schedulers, row by row.

Every network's schedule is the one :func:`~nnfin.train.optim.build_scheduler` makes for the
single-model :class:`~nnfin.train.loop.Trainer` (same epochs and steps per epoch), driven on a
stand-in optimizer that :func:`~nnfin.train.optim.build_optimizer` builds for one scalar
parameter: the learning rate (and, for ``onecycle``, the cycled momentum or Adam's beta1) that
a network uses at each step is the one torch gives the Trainer, bit for bit - including the
recursive forms (``CosineAnnealingLR``) that a closed formula would only approximate.

``step``, ``exponential`` and ``cosine`` change the rate once an epoch, ``onecycle`` after every
step: their values are recorded once per distinct (optimizer config, epochs, steps per epoch) on
a :class:`_Tape`, grown as training reaches them (folds of one candidate share it), and read by
index: a network's epoch or its own step count. ``plateau`` keeps one live
``ReduceLROnPlateau`` per network, stepped at each of its epoch ends with its own monitored loss.

>>> from nnfin.config import OptimConfig
>>> cfgs = [OptimConfig(lr=0.1, schedule="step", step_size=1, gamma=0.5), OptimConfig(lr=0.2)]
>>> s = StackSchedules(cfgs, max_epochs=[3, 3], steps_per_epoch=[2, 2], family="adam")
>>> lr, _ = s.rates(2, np.zeros((2, 2), dtype=np.int64)); lr[0].tolist()
[0.025, 0.2]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from nnfin.config import OptimConfig
from nnfin.train.optim import build_optimizer, build_scheduler

EPOCH_SCHEDULES = ("step", "exponential", "cosine")


def _stand_in(cfg: OptimConfig, epochs: int, steps_per_epoch: int):
    """``(optimizer, scheduler, when)`` as the Trainer builds them, on one scalar parameter."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = build_optimizer(cfg, [param])
    scheduler, when = build_scheduler(cfg, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)
    optimizer._opt_called = True  # type: ignore[attr-defined]  # rates only: no "step before" warning
    return optimizer, scheduler, when


def _momentum(group: dict) -> float:
    """Adam's beta1 or SGD's/RMSprop's momentum in a param group (0 where it has none)."""
    return float(group["betas"][0]) if "betas" in group else float(group.get("momentum", 0.0))


class _Tape:
    """The rates a scheduler gives after 0, 1, 2... of its steps, recorded as they are needed."""

    def __init__(self, cfg: OptimConfig, epochs: int, steps_per_epoch: int, limit: int) -> None:
        self.optimizer, self.scheduler, self.when = _stand_in(cfg, epochs, steps_per_epoch)
        self.limit = limit  # the most steps the scheduler takes (torch refuses more for onecycle)
        group = self.optimizer.param_groups[0]
        self.lr = np.empty(64)
        self.momentum = np.empty(64)
        self.lr[0], self.momentum[0], self.n = float(group["lr"]), _momentum(group), 1

    def upto(self, index: int) -> None:
        """Record the rates through ``index`` scheduler steps (at most ``limit``)."""
        index = min(index, self.limit)
        if index < self.n:
            return
        if index >= len(self.lr):
            size = max(index + 1, 2 * len(self.lr))
            self.lr, self.momentum = np.resize(self.lr, size), np.resize(self.momentum, size)
        group = self.optimizer.param_groups[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while self.n <= index:
                self.scheduler.step()
                self.lr[self.n], self.momentum[self.n] = float(group["lr"]), _momentum(group)
                self.n += 1

    def at(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.minimum(index, self.limit)
        self.upto(int(index.max(initial=0)))
        return self.lr[index], self.momentum[index]


class StackSchedules:
    """The learning rates (and cycled momenta) of every network of a stack, per step.

    ``configs``, ``max_epochs`` and ``steps_per_epoch`` hold one entry per
    network (row of the stack); ``family`` is the stack's optimizer family (``adam``: the
    momentum a schedule cycles is beta1).
    """

    def __init__(self, configs: Sequence[OptimConfig], *, max_epochs: Sequence[int],
                 steps_per_epoch: Sequence[int], family: str) -> None:
        self.kinds = [c.schedule for c in configs]
        self.any = any(k != "none" for k in self.kinds)
        self.per_step = "onecycle" in self.kinds  # rates change after every step
        self.cycles_momentum = False
        self.base_lr = np.array([c.lr for c in configs], dtype=np.float64)
        self.base_momentum = np.array(
            [c.betas[0] if family == "adam" else (0.0 if c.name == "gd" else c.momentum)
             for c in configs], dtype=np.float64)
        tapes: dict[tuple, _Tape] = {}
        self.tapes: list[_Tape | None] = []
        self.live: list[tuple[torch.optim.Optimizer, object] | None] = []
        for cfg, epochs, spe in zip(configs, max_epochs, steps_per_epoch, strict=True):
            tape = live = None
            if cfg.schedule in EPOCH_SCHEDULES or cfg.schedule == "onecycle":
                per_epoch = cfg.schedule != "onecycle"
                key = (cfg.model_dump_json(), epochs, 0 if per_epoch else spe)
                if key not in tapes:
                    tapes[key] = _Tape(cfg, epochs, spe, epochs if per_epoch else max(2, epochs * spe))
                tape = tapes[key]
                self.cycles_momentum |= bool(getattr(tape.scheduler, "cycle_momentum", False))
            elif cfg.schedule == "plateau":
                optimizer, scheduler, _ = _stand_in(cfg, epochs, spe)
                live = (optimizer, scheduler)
            self.tapes.append(tape)
            self.live.append(live)

    def rates(self, epoch: int, steps_before: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(lr, momentum)``, (S, M) each, for the S steps of epoch ``epoch`` (from 0), with
        ``steps_before`` (S, M) each network's optimizer steps before each of them; momentum
        is ``None`` when no schedule cycles it."""
        shape = steps_before.shape
        lr = np.broadcast_to(self.base_lr, shape).copy()
        momentum = np.broadcast_to(self.base_momentum, shape).copy() if self.cycles_momentum \
            else None
        for r, kind in enumerate(self.kinds):
            if kind == "none":
                continue
            tape = self.tapes[r]
            if kind == "plateau":
                lr[:, r] = self._live_lr(r)
            elif kind == "onecycle":
                assert tape is not None
                lr[:, r], mom = tape.at(steps_before[:, r])
                if momentum is not None:
                    momentum[:, r] = mom
            else:
                assert tape is not None
                lr[:, r], _ = tape.at(np.array([epoch]))
        return lr, momentum

    def _live_lr(self, r: int) -> float:
        live = self.live[r]
        assert live is not None
        return float(live[0].param_groups[0]["lr"])

    def logged_lr(self, r: int, epoch: int, steps: int) -> float:
        """The lr the Trainer logs at the end of epoch ``epoch`` (from 1) after ``steps``
        optimizer steps: before an epoch schedule steps, after a step schedule has."""
        kind = self.kinds[r]
        if kind == "none":
            return float(self.base_lr[r])
        if kind == "plateau":
            return self._live_lr(r)
        tape = self.tapes[r]
        assert tape is not None
        index = steps if kind == "onecycle" else epoch - 1
        return float(tape.at(np.array([index]))[0][0])

    def end_epoch(self, r: int, monitored: float) -> None:
        """Step network ``r``'s plateau schedule with its epoch's val (else train) loss."""
        live = self.live[r]
        if live is not None:
            live[1].step(monitored)  # type: ignore[attr-defined]

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the networks ``keep`` (when finished networks leave the stack)."""
        idx = np.asarray(keep, dtype=np.int64)
        self.kinds = [self.kinds[r] for r in keep]
        self.tapes = [self.tapes[r] for r in keep]
        self.live = [self.live[r] for r in keep]
        self.base_lr, self.base_momentum = self.base_lr[idx], self.base_momentum[idx]
