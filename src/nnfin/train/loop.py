"""The one training loop.

``Trainer.fit`` runs epochs of mini-batch steps, calls the callbacks' hooks through a single
dispatcher (:meth:`Trainer.notify`) and keeps a :class:`TrainState`. Data stays on the device,
batches are index selections drawn on the device, and losses are read back once per epoch
(on the CPU, also after every step, so a non-finite loss stops training at that step).

>>> from nnfin.config import load_config
>>> from nnfin.data import build_data
>>> from nnfin.models import build_model
>>> cfg = load_config(None, ["train.epochs=2", "data.n=200"])
>>> data = build_data(cfg.data)
>>> trainer = Trainer(build_model(cfg.model, in_dim=1, out_dim=1), data, cfg)
>>> trainer.fit().epoch
2
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from nnfin import distributed
from nnfin.config import Config
from nnfin.data import Data
from nnfin.device import cpu_threads, training_threads
from nnfin.train import rules
from nnfin.train.losses import make_loss, make_penalty
from nnfin.train.optim import CLOSURE_OPTIMIZERS, build_optimizer, build_scheduler
from nnfin.train.sampler import BatchSampler


class Callback:
    """Base class of the loop's callbacks: every hook does nothing (see :mod:`nnfin.train.callbacks`)."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...
    def on_batch_end(self, trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (the lecture's reproducibility)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """Where training is: counters, history and why it stopped."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "running"  # running | finished | early-stopped | diverged | interrupted
    stop_reason: str = ""
    restored_epoch: int | None = None  # epoch whose weights early stopping restored
    elapsed: float = 0.0  # seconds spent training, over all sessions of a resumed run


class Loop:
    """The loop every training runs through, for one network or a stack of many: epochs until
    :meth:`_more` says done, a callback stops it, or Ctrl-C; the callbacks' hooks through one
    dispatcher (:meth:`notify`); the :class:`TrainState`. A subclass supplies the *step* side:
    :meth:`_run_epoch` trains one epoch and returns the logs of the epochs it completed (one
    per network), :meth:`_more` whether anything is left to train, and :meth:`_wrap_up` what
    happens once the loop ends (the stack: networks still training end with the loop's status).

    :class:`Trainer` is the one-network loop (the user's ``nn.Module``, autograd,
    ``torch.optim``, closures); :class:`nnfin.train.stack.engine.StackTrainer` trains M
    networks with one batched step. Both keep the rules of :mod:`nnfin.train.rules`.
    """

    def __init__(self, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        self.callbacks = list(callbacks)
        self._batch_callbacks = [cb for cb in self.callbacks
                                 if type(cb).on_batch_end is not Callback.on_batch_end]
        self.state = TrainState()
        self._interrupted = False
        self._stop_now = False  # a callback asked to stop after this step (stop(now=True))

    # ------------------------------------------------------------------ control

    def notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback, in order (``on_train_end``: in reverse order,
        so a checkpoint written at the end sees the state before early stopping restores)."""
        order = reversed(self.callbacks) if hook == "on_train_end" else self.callbacks
        for cb in order:
            getattr(cb, hook)(self, *args)

    def stop(self, reason: str, status: str = "early-stopped", *, now: bool = False) -> None:
        """Ask the loop to stop after the current epoch (or step, for divergence); ``now``
        stops after the current step (a callback's ``on_batch_end``, e.g. the lr range test)."""
        self.state.status, self.state.stop_reason = status, reason
        self._stop_now = self._stop_now or now

    @property
    def stopping(self) -> bool:
        return self.state.status != "running"

    def fit(self) -> TrainState:
        """Train until the budget is spent, a callback stops it, or Ctrl-C."""
        self.state.status, self.state.stop_reason = "running", ""
        self._stop_now = False
        self.notify("on_train_begin")
        self._started = time.perf_counter() - self.state.elapsed
        with _sigint_as_flag(self), cpu_threads(self.threads):
            while self._more() and not self.stopping:
                self.notify("on_epoch_begin")
                completed = self._run_epoch()
                self.state.elapsed = time.perf_counter() - self._started
                for logs in completed:
                    self.notify("on_epoch_end", logs)
                if self._interrupted:
                    self.stop("interrupted by the user (Ctrl-C)", "interrupted")
        if self.state.status == "running":
            self.state.status = "finished"
        self._wrap_up()
        self.notify("on_train_end")
        return self.state

    # ------------------------------------------------------------- the step side

    threads: int | None = None  # CPU threads while training (device.training_threads)

    def _more(self) -> bool:
        raise NotImplementedError

    def _run_epoch(self) -> list[dict[str, float]]:
        raise NotImplementedError

    def _wrap_up(self) -> None:
        """Called once the loop has ended, before ``on_train_end``."""


class Trainer(Loop):
    """Train ``model`` on ``data`` as ``cfg`` says: the one-network step of the :class:`Loop`."""

    def __init__(self, model: nn.Module, data: Data, cfg: Config, *,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        super().__init__(callbacks)
        self.model, self.data, self.cfg = model, data, cfg
        self.device = data.x_train.device
        tc = cfg.train
        self.x_train, self.y_train = data.split("train")
        n_train = self.x_train.shape[0]
        rules.check_batch_size(tc.batch_size, tc.sampling, n_train)
        self._all_rows = torch.arange(n_train, device=self.device)
        self.sampler = BatchSampler(n_train, tc.batch_size, tc.sampling, seed=tc.seed,
                                    device=self.device)
        spe = self.sampler.steps_per_epoch
        self.max_epochs, self.max_steps = rules.budget(epochs=tc.epochs, iterations=tc.iterations,
                                                       steps_per_epoch=spe)
        self.optimizer = build_optimizer(cfg.optim, model.parameters())
        self.scheduler, self.schedule_on = build_scheduler(
            cfg.optim, self.optimizer, epochs=self.max_epochs, steps_per_epoch=spe)
        self.loss_fn = make_loss(tc.loss, huber_delta=tc.huber_delta)
        self.penalty = make_penalty(cfg.penalty, model)
        self.uses_closure = cfg.optim.name in CLOSURE_OPTIMIZERS
        self.has_val = data.x_val.shape[0] > 0
        # the module the steps run through: DDP and/or torch.compile around the same parameters
        self.distributed = tc.distributed and distributed.world_size() > 1
        self.train_model: nn.Module = distributed.wrap(model, self.device) if self.distributed \
            else model
        if tc.compile:
            self.train_model = torch.compile(self.train_model)
        # differential training: (n_train, k) dy/dx targets for the inputs data.dydx_index
        self.d_train = data.dydx.get("train")
        self.d_weight = tc.derivative_weight
        self.step_in_epoch = 0  # > 0 only when a run was interrupted inside an epoch
        self.epoch_losses: list[torch.Tensor] = []
        rows = n_train if tc.sampling == "full" else min(tc.batch_size, n_train)
        self.threads = training_threads(tc.threads, device=self.device,
                                        work=sum(p.numel() for p in model.parameters()) * rows)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # --------------------------------------------------------------------- loop

    def _more(self) -> bool:
        return self.state.epoch < self.max_epochs and self.state.step < self.max_steps

    def _run_epoch(self) -> list[dict[str, float]]:
        """One epoch of steps; its logs once it completed (not when Ctrl-C stopped it inside
        the epoch, where a checkpoint keeps the position, nor when it diverged)."""
        self._steps()
        if self.step_in_epoch == 0 and self.state.status != "diverged":
            return [self.state.history[-1]]
        return []

    def _steps(self) -> None:
        self.model.train()
        check_each_step = self.device.type == "cpu"  # free on the CPU, a sync elsewhere
        for idx in self.sampler.epoch(self.step_in_epoch):
            if self.distributed:  # this rank's slice of the global batch
                idx = distributed.shard(self._all_rows if idx is None else idx)
            xb = self.x_train if idx is None else self.x_train.index_select(0, idx)
            yb = self.y_train if idx is None else self.y_train.index_select(0, idx)
            db = None if self.d_train is None else (
                self.d_train if idx is None else self.d_train.index_select(0, idx))
            loss = self._step(xb, yb, db)
            self.epoch_losses.append(loss)
            self.state.step += 1
            self.step_in_epoch += 1
            if self.schedule_on == "step":
                self.scheduler.step()
            if check_each_step and not math.isfinite(loss.item()):
                return self._diverged()
            for cb in self._batch_callbacks:
                cb.on_batch_end(self)
            if self._interrupted or self.state.step >= self.max_steps or self._stop_now:
                break
        if self._interrupted and self.step_in_epoch < self.sampler.steps_per_epoch \
                and self.state.step < self.max_steps:
            return None  # stay inside the epoch; a checkpoint keeps the position
        self._end_epoch()

    def _objective(self, xb: torch.Tensor, yb: torch.Tensor, db: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, data_loss)``: the loss plus penalty and, with derivative targets ``db``,
        ``weight * mean |dy_NN/dx - dy/dx|^2`` through ``autograd.grad(create_graph=True)``."""
        if db is None:
            data_loss = self.loss_fn(self.train_model(xb), yb)
            objective = data_loss
        else:
            xb = xb.detach().requires_grad_(True)
            pred = self.train_model(xb)
            data_loss = self.loss_fn(pred, yb)
            (grad,) = torch.autograd.grad(pred.sum(), xb, create_graph=True)  # (B, in)
            d_pred = grad[:, self.data.dydx_index]  # (B, k)
            objective = data_loss + self.d_weight * (d_pred - db).square().mean()
        if self.penalty is not None:
            objective = objective + self.penalty()
        return objective, data_loss

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, db: torch.Tensor | None = None
              ) -> torch.Tensor:
        """One optimizer step; returns the data loss (without penalty or derivative loss)."""
        if self.uses_closure:
            first: list[torch.Tensor] = []

            def closure() -> torch.Tensor:
                self._clear_grads()
                objective, data_loss = self._objective(xb, yb, db)
                objective.backward()
                if not first:
                    first.append(data_loss.detach())
                return objective

            self.optimizer.step(closure)
            return first[0]
        self._clear_grads()
        objective, data_loss = self._objective(xb, yb, db)
        objective.backward()
        self.optimizer.step()
        return data_loss.detach()

    def _clear_grads(self) -> None:
        """``optimizer.zero_grad(set_to_none=True)``, minus its profiler scope (~6 us a step)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def _end_epoch(self) -> None:
        losses = torch.stack(self.epoch_losses)  # the one host read of this epoch's losses
        train_loss = float(distributed.mean_across_ranks(losses.mean()))
        if not math.isfinite(train_loss):
            return self._diverged(losses)
        logs: dict[str, float] = {"epoch": self.state.epoch + 1, "step": self.state.step,
                                  "train_loss": train_loss, "lr": self.lr}
        if self.has_val:
            logs["val_loss"] = self.evaluate("val")
        if self.schedule_on == "plateau":
            self.scheduler.step(logs.get("val_loss", train_loss))
        elif self.scheduler is not None and self.schedule_on == "epoch":
            self.scheduler.step()
        logs["time"] = time.perf_counter() - self._started
        self.state.history.append(logs)
        self.state.epoch += 1
        self.epoch_losses, self.step_in_epoch = [], 0

    def _diverged(self, losses: torch.Tensor | None = None) -> None:
        losses = torch.stack(self.epoch_losses) if losses is None else losses
        bad = int(torch.nonzero(~torch.isfinite(losses))[0])
        step = self.state.step - len(losses) + bad + 1
        value = float(losses[bad])
        self.stop(rules.divergence(value, self.state.epoch + 1, step, self.lr), "diverged")

    @torch.no_grad()
    def evaluate(self, split: str) -> float:
        """The training loss (without penalty) on a whole split, in the model's units."""
        x, y = self.data.split(split)
        was_training = self.model.training
        self.model.eval()
        value = float(self.loss_fn(self.model(x), y))
        self.model.train(was_training)
        return value

    # ---------------------------------------------------------------- state

    def state_dict(self, *, history: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, RNGs, callbacks...
        (``history=False``: the train state without its per-epoch history, which the caller
        adds; the weights and optimizer state are the live tensors, not copies)."""
        train_state = asdict(replace(self.state, history=[])) if not history else asdict(self.state)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "sampler": self.sampler.state_dict(),
            "train_state": train_state,
            "step_in_epoch": self.step_in_epoch,
            "epoch_losses": torch.stack(self.epoch_losses) if self.epoch_losses else None,
            "callbacks": {key: cb.state_dict() for key, cb in _keyed(self.callbacks)},
            "rng": capture_rng(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next :meth:`fit` continues where it stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.state = TrainState(**state["train_state"])
        self.step_in_epoch = state["step_in_epoch"]
        losses = state["epoch_losses"]
        self.epoch_losses = [] if losses is None else list(losses.to(self.device).unbind(0))
        if self.step_in_epoch > 0:
            self.sampler.rewind_epoch()
        for key, cb in _keyed(self.callbacks):
            saved = state["callbacks"].get(key)
            if saved:
                cb.load_state_dict(saved)
        restore_rng(state["rng"])


def _keyed(callbacks: list[Callback]) -> list[tuple[str, Callback]]:
    """``("EarlyStopping#0", cb)``...: keys that survive adding or removing a progress bar."""
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        out.append((f"{name}#{seen.get(name, 0)}", cb))
        seen[name] = seen.get(name, 0) + 1
    return out


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


@contextlib.contextmanager
def _sigint_as_flag(trainer: Loop):
    """Turn Ctrl-C into a flag the loop checks after each step, so state stays consistent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # second Ctrl-C: default behaviour (abort now)
        trainer._interrupted = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
