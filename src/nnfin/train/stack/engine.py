"""Train a group of compatible networks as one stack: one batched step per mini-batch.

Every :class:`Job` is one network with its config, its own fold of (scaled) data and its
initial weights. A group shares the activation, depth, optimizer family, loss, sampling mode,
batch size, dtype, device and whether it trains on derivative targets; widths, learning rates
and their schedules (:mod:`~nnfin.train.stack.schedules`), momenta, betas, penalties,
derivative weights, seeds, epochs and early stopping may differ per network. Differential
training takes each network's input derivatives through autograd
(:func:`~nnfin.train.stack.functional.forward_with_input_grad`); plain training runs the
hand-written kernels, which are faster (``benchmarks/finance_search.py --part kernels``).
Narrower networks are zero-padded to the widest one (:meth:`StackLayout.width_mask` keeps the padding inert).

Batch order: each network owns a :class:`~nnfin.train.sampler.BatchSampler` seeded like the
single-model :class:`~nnfin.train.loop.Trainer`'s, so it sees the same batches in the same
order. Folds of unequal size keep their own steps per epoch: an epoch runs as many steps as
the largest fold needs, a short last batch is masked, and a network without a batch at a step
sits that step out (parameters and optimizer state frozen). Per-epoch logs, early stopping
(nnfin's own :class:`~nnfin.train.callbacks.EarlyStopping`, one per network) and divergence
follow the Trainer; a network that stops leaves the stack, so it stays frozen and costs nothing.

>>> from nnfin.config import load_config
>>> from nnfin.data import build_data
>>> from nnfin.models import build_model
>>> cfg = load_config(None, ["train.epochs=2", "data.n=200"])
>>> data = build_data(cfg.data)
>>> jobs = [Job(cfg, data, build_model(cfg.model, in_dim=1, out_dim=1)) for _ in range(3)]
>>> [r.epochs for r in train_group(jobs)]
[2, 2, 2]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnfin.config import Config
from nnfin.data import Data
from nnfin.device import training_threads
from nnfin.train import rules
from nnfin.train.callbacks import EarlyStopping
from nnfin.train.loop import Callback, Loop
from nnfin.train.sampler import BatchSampler
from nnfin.train.stack.functional import (
    StackLayout,
    StepBuffers,
    add_penalty_,
    backward_step,
    errors_grad,
    forward_autograd,
    forward_step,
    forward_with_input_grad,
    step_losses,
)
from nnfin.train.stack.optimizers import StackedOptimizer, family
from nnfin.train.stack.schedules import StackSchedules


@dataclass
class Job:
    """One network to train: its config, its data (one fold, scaled) and its initial weights."""

    cfg: Config
    data: Data
    model: nn.Module  # MLP or MLPLow holding the initial weights (left unchanged)
    seed: int | None = None  # batch-order seed; default cfg.train.seed, as the Trainer


@dataclass
class JobResult:
    """How one network trained: the Trainer's history, status and (optionally) its weights."""

    status: str  # finished | early-stopped | diverged
    stop_reason: str
    history: list[dict[str, float]]  # per epoch: epoch, step, train_loss, lr, val_loss
    epochs: int
    steps: int
    best_epoch: int  # early stopping's best epoch, else the epoch of the lowest val (train) loss
    restored_epoch: int | None  # epoch whose weights early stopping restored
    state_dict: dict[str, torch.Tensor] | None = None  # the model class's, on the CPU

    def _last(self, key: str) -> float:
        return self.history[-1].get(key, math.nan) if self.history else math.nan

    @property
    def final_train_loss(self) -> float:
        return self._last("train_loss")

    @property
    def final_val_loss(self) -> float:
        return self._last("val_loss")

    @property
    def best_val_loss(self) -> float:
        """The val loss at :attr:`best_epoch` (scaled units, the training loss function)."""
        if self.best_epoch < 1 or self.best_epoch > len(self.history):
            return math.nan
        return self.history[self.best_epoch - 1].get("val_loss", math.nan)


def group_key(cfg: Config) -> tuple:
    """What networks must share to run in one stack (widths, rates and penalties need not)."""
    return (cfg.model.activation, len(cfg.model.neurons), family(cfg.optim.name),
            cfg.train.loss, cfg.train.huber_delta if cfg.train.loss == "huber" else None,
            cfg.train.sampling, cfg.train.batch_size if cfg.train.sampling != "full" else None,
            cfg.train.dtype, cfg.train.device, bool(cfg.data.derivatives))


def train_group(jobs: list[Job], *, return_weights: bool = False,
                callbacks: list[Callback] | tuple[Callback, ...] = ()) -> list[JobResult]:
    """Train compatible ``jobs`` together; one :class:`JobResult` per job, in order.
    ``callbacks`` join the :class:`StackTrainer`'s loop; Ctrl-C stops the stack at the end of
    the epoch and raises ``KeyboardInterrupt`` here."""
    # networks with the same optimizer hyperparameters side by side: one block of rows each,
    # which the optimizer updates as one tensor (see nnfin.train.stack.optimizers)
    order = sorted(range(len(jobs)), key=lambda i: _optim_key(jobs[i].cfg))
    stack = StackTrainer([jobs[i] for i in order], callbacks=callbacks,
                         return_weights=return_weights)
    results = stack.run()
    if stack.state.status == "interrupted":
        raise KeyboardInterrupt
    out: list[JobResult] = [results[0]] * len(jobs)
    for position, i in enumerate(order):
        out[i] = results[position]
    return out


def _optim_key(cfg: Config) -> tuple:
    o = cfg.optim
    # networks on one schedule for as many epochs side by side too: their rates stay equal
    return (o.name, tuple(o.betas), o.eps, o.lr, o.weight_decay, o.momentum, o.nesterov,
            o.schedule, o.step_size, o.gamma, o.min_lr, o.max_lr or 0.0, o.factor, o.patience,
            cfg.train.epochs, cfg.train.iterations or 0)


class StackTrainer(Loop):
    """The step side of the :class:`~nnfin.train.loop.Loop` for a group of M networks: the
    (M, P) parameters, one batched step per mini-batch, and everything per network.

    The loop's callbacks see the stack as their ``trainer``: ``on_epoch_end`` once per network
    and epoch, with that network's logs (``logs["network"]`` is its job index), ``on_batch_end``
    after every batched step (a stop it asks for takes effect at the epoch's end), the others
    once. ``trainer.stop()`` ends every network still training, with that status; Ctrl-C ends
    them as ``interrupted`` (and :func:`train_group` raises ``KeyboardInterrupt`` again).
    """

    def __init__(self, jobs: list[Job], *, callbacks: list[Callback] | tuple[Callback, ...] = (),
                 return_weights: bool = False) -> None:
        super().__init__(callbacks)
        self.return_weights = return_weights
        keys = {group_key(j.cfg) for j in jobs}
        if len(keys) != 1:
            raise ValueError(f"jobs of one group must share {_KEY_NAMES}; got {sorted(keys)}")
        self.jobs = jobs
        first = jobs[0]
        tc = first.cfg.train
        x0 = first.data.scaled["x_train"]
        self.device, self.dtype = x0.device, x0.dtype
        self.activation, self.loss, self.huber = first.cfg.model.activation, tc.loss, tc.huber_delta
        self.mode = tc.sampling
        in_dim, out_dim = first.data.in_dim, first.data.out_dim
        widths = [[in_dim, *j.cfg.model.neurons, out_dim] for j in jobs]
        if any((j.data.in_dim, j.data.out_dim) != (in_dim, out_dim) for j in jobs):
            raise ValueError("jobs of one group need data with the same dimensions")
        self.layout = StackLayout(np.max(np.array(widths), axis=0).tolist())
        m = len(jobs)
        self._stack_data()
        # 1. parameters: initial weights, zero-padded; masks for padding and penalties
        theta = torch.zeros(m, self.layout.n_params, dtype=torch.float64)
        wmask = torch.stack([self.layout.width_mask(w) for w in widths])  # (M, P)
        for row, job in enumerate(jobs):
            for (w, b), (pw, pb) in zip(job.model.layers(), self.layout.views(theta[row:row + 1]),
                                        strict=True):
                pw[0, :w.shape[0], :w.shape[1]] = w.detach().double()
                pb[0, 0, :b.shape[0]] = b.detach().double()
        self.theta = theta.to(self.device, self.dtype)
        self.wmask = None if bool((wmask == 1).all()) else wmask.to(self.device, self.dtype)
        self.l1, self.l2 = self._penalty_lambdas()
        self.opt = StackedOptimizer([j.cfg.optim for j in jobs], self.theta)
        # 2. batch order, lengths and early stopping per network
        self.samplers, self.row_steps, self.row_epochs = [], [], []
        shared: dict[tuple[int, int], BatchSampler] = {}
        for job in jobs:
            n = job.data.scaled["x_train"].shape[0]
            rules.check_batch_size(tc.batch_size, tc.sampling, n)
            seed = job.cfg.train.seed if job.seed is None else job.seed
            # networks with the same seed and row count draw the same batch order: one sampler
            # (one generator, advanced once per epoch) serves them all, as each would its own
            sampler = shared.setdefault((seed, n), BatchSampler(n, tc.batch_size, tc.sampling,
                                                                seed=seed, device=self.device))
            spe = sampler.steps_per_epoch
            max_epochs, max_steps = rules.budget(epochs=job.cfg.train.epochs,
                                                 iterations=job.cfg.train.iterations, steps_per_epoch=spe)
            self.row_steps.append(max_steps)
            self.row_epochs.append(max_epochs)
            self.samplers.append(sampler)
        self.batch = max(s.batch_size for s in self.samplers)  # B: columns of a step's batch
        self._buffers()
        self.steps = np.zeros(m, dtype=np.int64)
        self.max_steps_a = np.array(self.row_steps)
        self.stoppers = [_stopper(j.cfg) for j in jobs]
        self.schedules = StackSchedules(
            [j.cfg.optim for j in jobs], max_epochs=self.row_epochs,
            steps_per_epoch=[s.steps_per_epoch for s in self.samplers], family=self.opt.family)
        self.best = self.theta.clone() if any(s is not None and s.restore_best
                                              for s in self.stoppers) else None
        self.rows = list(range(m))  # job index of each row of the stack
        self.history: list[list[dict[str, float]]] = [[] for _ in jobs]
        self.results: list[JobResult | None] = [None] * m
        self._scratch_models: dict[int, nn.Module] = {}
        self.epoch = 0
        self.max_epochs, self.max_steps = max(self.row_epochs), max(self.row_steps)
        self.total_steps = 0  # batched steps taken (each trains every network with a batch)
        self.threads = training_threads(tc.threads, device=self.device,
                                        work=self.theta.numel() * self.batch)

    # ------------------------------------------------------------------ setup

    def _buffers(self) -> None:
        """Layer views of ``theta`` (updated in place, so the views stay valid), the gradient
        buffer and the doubled L2 lambdas; rebuilt when networks leave the stack."""
        self.buffers = StepBuffers(self.layout, self.batch, self.theta)  # for training steps
        self.val_buffers = StepBuffers(self.layout, self.x_val.shape[2], self.theta)
        self._batches: torch.Tensor | None = None  # gathered batches (see _gather)
        self.grad = torch.empty_like(self.theta)
        self.l2_twice = None if self.l2 is None else 2.0 * self.l2

    def _stack_data(self) -> None:
        """All folds' scaled rows in one tensor per split, with each network's offsets."""
        datas: dict[int, Data] = {}
        for job in self.jobs:
            datas.setdefault(id(job.data), job.data)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("x_train", "y_train", "x_val", "y_val")}
        start: dict[int, tuple[int, int]] = {}
        n_tr = n_va = 0
        for key, d in datas.items():
            start[key] = (n_tr, n_va)
            for k in parts:
                parts[k].append(d.scaled[k])
            n_tr += d.scaled["x_train"].shape[0]
            n_va += d.scaled["x_val"].shape[0]
        x, y, x_val, y_val = (torch.cat(parts[k]) for k in parts)  # (N_all, in/out)
        # feature-major (features, N_all): a batch is one 1-D gather per feature (StepBuffers)
        self.x, self.y = x.t().contiguous(), y.t().contiguous()
        # differential training: the scaled dy/dx targets (k, N_all) of inputs ``d_index``
        with_d = [d.dydx.get("train") is not None for d in datas.values()]
        self.differential = all(with_d)
        if any(with_d) and not self.differential:
            raise ValueError("jobs of one group need derivative targets for all or none")
        self.d: torch.Tensor | None = None
        self.d_index: list[int] = []
        self.d_weight: torch.Tensor | None = None
        if self.differential:
            indexes = {tuple(d.dydx_index) for d in datas.values()}
            if len(indexes) != 1:
                raise ValueError("jobs of one group need derivative targets of the same inputs")
            self.d_index = list(indexes.pop())
            self.d = torch.cat([d.dydx["train"] for d in datas.values()]).t().contiguous()
            self.d_weight = torch.tensor([j.cfg.train.derivative_weight for j in self.jobs],
                                         device=self.device, dtype=self.dtype)
        # the step: hand-written kernels, or autograd where second derivatives are needed
        self.autograd = self.differential
        self.offsets = torch.tensor([start[id(j.data)][0] for j in self.jobs], device=self.device)
        n_val = [j.data.scaled["x_val"].shape[0] for j in self.jobs]
        self.has_val = np.array(n_val) > 0
        width = max(1, max(n_val))
        cols = torch.arange(width, device=self.device)
        idx = torch.stack([start[id(j.data)][1] + cols.clamp(max=max(n - 1, 0))
                           for j, n in zip(self.jobs, n_val, strict=True)])  # (M, V)
        self.val_valid = cols.unsqueeze(0) < torch.tensor(n_val, device=self.device).unsqueeze(1)
        self.val_count = torch.tensor(n_val, device=self.device, dtype=self.dtype)
        if x_val.shape[0] == 0:  # no validation rows anywhere: nothing to gather
            x_val, y_val = x[:1], y[:1]
        idx = idx.clamp(max=x_val.shape[0] - 1)  # networks without validation rows: masked
        # feature-major as a training batch, [x; 1]: (M, in + 1, V), and (M, out, V)
        x_val = torch.cat([x_val, torch.ones_like(x_val[:, :1])], 1)
        self.x_val = x_val[idx].transpose(1, 2).contiguous()
        self.y_val = y_val[idx].transpose(1, 2).contiguous()

    def _penalty_lambdas(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(M, P) lambdas: l1/l2 per network, zero on biases where ``include_bias`` is off."""
        is_bias = self.layout.is_bias().to(torch.float64)
        out = []
        for name in ("l1", "l2"):
            lam = torch.tensor([getattr(j.cfg.penalty, name) for j in self.jobs], dtype=torch.float64)
            keep_bias = torch.tensor([float(j.cfg.penalty.include_bias) for j in self.jobs],
                                     dtype=torch.float64)
            per = lam.view(-1, 1) * (1 - is_bias.view(1, -1) * (1 - keep_bias.view(-1, 1)))
            out.append(per.to(self.device, self.dtype) if bool(lam.any()) else None)
        return out[0], out[1]

    # ------------------------------------------------------------------- loop

    def _more(self) -> bool:
        return bool(self.rows)

    def _run_epoch(self) -> list[dict[str, float]]:
        losses, stepped = self._epoch_steps()
        logs = self._end_epoch(losses, stepped)
        self.state.epoch, self.state.step = self.epoch, int(self.total_steps)
        return logs

    def _wrap_up(self) -> None:
        """Networks still training when the loop stopped (a callback, Ctrl-C) end with its
        status and reason."""
        if self.rows:
            for r in range(len(self.rows)):
                self._finish(r, self.state.status, self.state.stop_reason)
            self._keep([])

    @property
    def lr(self) -> float:
        """The first network's learning rate (each network's own is in its logs)."""
        return self.schedules.logged_lr(0, self.epoch, int(self.steps[0])) if self.rows else math.nan

    def run(self) -> list[JobResult]:
        """Train every job (:meth:`fit`); one :class:`JobResult` per job, in order."""
        self.fit()
        return [r for r in self.results if r is not None]

    def _epoch_batches(self) -> tuple[torch.Tensor, np.ndarray]:
        """``(index (S, M, B), counts (S, M))``: every network's batches of this epoch, drawn by
        its own sampler, as rows of the stacked data; short and missing batches are padded."""
        orders: dict[int, torch.Tensor] = {}
        for sampler in self.samplers:
            if id(sampler) not in orders:
                orders[id(sampler)] = epoch_order(sampler)
        flats = [orders[id(sampler)] for sampler in self.samplers]
        lengths = np.array([f.numel() for f in flats])
        b = self.batch
        s = int(max(math.ceil(n / b) for n in lengths))
        counts = np.clip(lengths[None, :] - b * np.arange(s)[:, None], 0, b)  # (S, M)
        if len(orders) == 1 and lengths[0] == s * b:  # one order, full batches: no padding
            index = flats[0].view(s, 1, b) + self.offsets.view(1, -1, 1)
            return index, counts
        if (lengths == lengths[0]).all():
            padded = torch.stack(flats)  # (M, length)
        else:
            padded = torch.nn.utils.rnn.pad_sequence(flats, batch_first=True)  # (M, max length)
        padded = F.pad(padded, (0, s * b - padded.shape[1]))
        index = (padded + self.offsets.unsqueeze(1)).view(len(flats), s, b).transpose(0, 1)
        return index.contiguous(), counts

    def _epoch_steps(self) -> tuple[torch.Tensor, np.ndarray]:
        index, counts = self._epoch_batches()
        n_steps, m = counts.shape
        # which network steps when: (S, M); the usual epoch (every network a full batch at
        # every step, none at its step budget) needs no bookkeeping per step
        has_batch = counts > 0
        stepped = has_batch & (np.cumsum(has_batch, axis=0) <= (self.max_steps_a - self.steps))
        all_full = bool((counts == self.batch).all())
        plain = all_full and bool(stepped.all())
        counts_t = torch.as_tensor(counts, device=self.device, dtype=self.dtype)
        cols = torch.arange(self.batch, device=self.device)
        out_dim = self.y.shape[0]
        # learning rates (and cycled momenta) per step and network, from each one's schedule:
        # set once for the epoch, or before every step for a per-step schedule
        lrs = moms = None
        if self.schedules.any:
            before = self.steps[None, :] + np.cumsum(stepped, axis=0) - stepped  # (S, M)
            lrs, moms = self.schedules.rates(self.epoch, before)
            if not self.schedules.per_step:
                self.opt.set_rates(lrs[0], None if moms is None else moms[0])
                lrs = None
        # the epoch's batches gathered in chunks of steps (one gather per feature each, not per
        # step); each step's prediction errors are kept, and the chunk's losses computed at
        # its end
        n_rows = self.x.shape[0] + 1 + 2 * out_dim + (0 if self.d is None else self.d.shape[0])
        chunk = max(1, _GATHER_BYTES // max(1, index[0].numel() * n_rows * self.x.element_size()))
        losses = []
        for start in range(0, n_steps, chunk):
            xs, ys, ds = self._gather(index[start:start + chunk])  # (steps, M, features, B) views
            diffs = ys.new_zeros(ys.shape)  # (steps, M, out, B)
            for j, (xb, yb, diff) in enumerate(zip(xs.unbind(0), ys.unbind(0), diffs.unbind(0),
                                                   strict=True)):
                s = start + j
                db = None if ds is None else ds[j]
                if lrs is not None:
                    self.opt.set_rates(lrs[s], None if moms is None else moms[s])
                if plain:
                    self._step(xb, yb, diff, None, None, None, db)
                    for cb in self._batch_callbacks:
                        cb.on_batch_end(self)
                    continue
                active = stepped[s]
                if not active.any():
                    continue
                full = bool((counts[s] == self.batch).all())
                valid = None if full else cols.unsqueeze(0) < counts_t[s].unsqueeze(1)  # (M, B)
                self._step(xb, yb, diff, valid, None if full else counts_t[s],
                           None if active.all() else active, db)
                for cb in self._batch_callbacks:
                    cb.on_batch_end(self)
            k = diffs.shape[0]
            step_counts = None if all_full else counts_t[start:start + k].reshape(-1)
            losses.append(step_losses(diffs.view(k * m, out_dim, self.batch), self.loss,
                                      count=step_counts, huber_delta=self.huber,
                                      feature_major=True).view(k, m))
        self.steps += stepped.sum(0)
        self.total_steps += int(stepped.any(1).sum())
        return torch.cat(losses), stepped

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, diff: torch.Tensor,
              valid: torch.Tensor | None, count: torch.Tensor | None,
              active: np.ndarray | None, db: torch.Tensor | None = None) -> None:
        """One optimizer step of every network on its batch, feature-major: ``xb`` (M, in + 1,
        B) with a row of ones, ``yb`` (M, out, B) the negated targets, ``db`` (M, k, B) the
        derivative targets of differential training; the prediction errors go to ``diff``
        (M, out, B), for the epoch's losses."""
        if self.autograd:
            grad = self._autograd_grad(xb, yb, diff, valid, count, db)
        else:
            diff, cache = forward_step(self.buffers, xb, self.activation, minus_target=yb, out=diff)
            g, scale = errors_grad(diff, self.loss, count=count, valid=valid,
                                   huber_delta=self.huber, feature_major=True)
            backward_step(self.buffers, cache, g, self.activation, scale)
            grad = torch.cat(self.buffers.grads_flat, dim=1, out=self.grad)  # (M, P)
        add_penalty_(grad, self.theta, self.l1, self.l2_twice)  # (M, P)
        if self.wmask is not None:
            grad.mul_(self.wmask)
        self.opt.step(self.theta, grad, active=active)

    def _autograd_grad(self, xb: torch.Tensor, yb: torch.Tensor, diff: torch.Tensor,
                       valid: torch.Tensor | None, count: torch.Tensor | None,
                       db: torch.Tensor | None) -> torch.Tensor:
        """The (M, P) gradient of each network's objective through autograd, as the Trainer
        computes it: the loss and, with derivative targets ``db``, ``derivative_weight *
        mean |dy_NN/dx - dy/dx|^2`` with dy_NN/dx from ``autograd.grad(create_graph=True)``."""
        n_in = self.x.shape[0]
        theta = self.theta.detach().requires_grad_(True)
        x = xb[:, :n_in]
        index = None if self.d_index == list(range(n_in)) else self.d_index
        with torch.enable_grad():
            both = None if db is None else forward_with_input_grad(
                theta, self.layout, x, self.activation, index)
            if both is not None:  # the input derivatives written out: first order only
                pred, d_pred = both
            else:
                if db is not None:
                    x = x.detach().requires_grad_(True)
                pred = forward_autograd(theta, self.layout, x, self.activation)  # (M, out, B)
            errors = pred + yb
            if valid is not None:
                errors = errors.masked_fill(~valid.unsqueeze(1), 0.0)
            objective = step_losses(errors, self.loss, count=count, huber_delta=self.huber,
                                    feature_major=True)  # (M,)
            if db is not None:
                if both is None:  # autograd's double backward
                    (dx,) = torch.autograd.grad(pred.sum(), x, create_graph=True)  # (M, in, B)
                    d_pred = dx if index is None else dx[:, index]
                miss = d_pred - db  # (M, k, B)
                if valid is None:
                    d_loss = miss.square().mean((1, 2))
                else:
                    miss = miss.masked_fill(~valid.unsqueeze(1), 0.0)
                    n = count.clamp(min=1) * miss.shape[1]  # type: ignore[union-attr]
                    d_loss = miss.square().sum((1, 2)) / n
                objective = objective + self.d_weight * d_loss
            (grad,) = torch.autograd.grad(objective.sum(), theta)
        diff.copy_(errors.detach())
        return grad

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The rows ``index`` (steps, M, B) as feature-major batches: ``x`` (steps, M, in + 1,
        B) with a row of ones, ``-y`` (steps, M, out, B) and the derivative targets (steps, M,
        k, B) or ``None``; views of buffers kept across epochs."""
        k = index.shape[0]
        n_in, n_out = self.x.shape[0], self.y.shape[0]
        sources = [*self.x, *self.y] if self.d is None else [*self.x, *self.y, *self.d]
        shape = (len(sources) + 1, *index.shape)
        if self._batches is None or self._batches.shape[2:] != shape[2:] or \
                self._batches.shape[0] != shape[0] or self._batches.shape[1] < k:
            self._batches = self.x.new_empty(shape)  # [x; 1; y; d] rows, each (steps, M, B)
            self._batches[n_in].fill_(1.0)
        rows = index.reshape(-1)
        buf = self._batches[:, :k]
        for f, source in enumerate(sources):
            torch.index_select(source, 0, rows, out=buf[f if f < n_in else f + 1].view(-1))
        buf[n_in + 1:n_in + 1 + n_out].neg_()  # -y: the last layer's product adds it (forward_step)
        batches = buf.permute(1, 2, 0, 3)  # (steps, M, in + 1 + out + k, B)
        ds = None if self.d is None else batches[:, :, n_in + 1 + n_out:]
        return batches[:, :, :n_in + 1], batches[:, :, n_in + 1:n_in + 1 + n_out], ds

    @torch.no_grad()
    def _val_losses(self) -> torch.Tensor:
        """The training loss (no penalty) of every network on its whole validation split, (M,)."""
        pred, _ = forward_step(self.val_buffers, self.x_val, self.activation)
        diff = (pred - self.y_val).masked_fill_(~self.val_valid.unsqueeze(1), 0.0)
        return step_losses(diff, self.loss, count=self.val_count, huber_delta=self.huber,
                           feature_major=True)

    # -------------------------------------------------------------- epoch end

    def _end_epoch(self, losses: torch.Tensor, stepped: np.ndarray) -> list[dict[str, float]]:
        """Each network's epoch logs, early stopping, divergence and budget; the networks that
        are done leave the stack. Returns the logs of this epoch, one per network that logged
        one, with its job index as ``"network"``."""
        completed: list[dict[str, float]] = []
        self.epoch += 1
        mask = torch.from_numpy(stepped)  # (S, M): which network stepped at which step
        host = torch.where(mask, losses.cpu(), 0.0)  # the one host read of this epoch's losses
        n_steps = stepped.sum(0)
        train = (host.sum(0) / torch.from_numpy(np.maximum(n_steps, 1))).tolist()  # epoch means
        finite = torch.isfinite(host).all(0).tolist()
        val = self._val_losses().cpu().tolist() if self.has_val.any() else []  # [] unread
        done, improved = [], []
        for r, job_index in enumerate(self.rows):
            if n_steps[r] == 0:  # no step this epoch: its step budget is spent
                done.append((r, "finished", ""))
                continue
            if not finite[r]:
                mine = host[mask[:, r], r]
                bad = int(torch.nonzero(~torch.isfinite(mine))[0])
                step = int(self.steps[r]) - mine.numel() + bad + 1
                lr = self.schedules.logged_lr(r, self.epoch, step)  # the Trainer's lr then
                done.append((r, "diverged", rules.divergence(float(mine[bad]), self.epoch, step,
                                                             lr)))
                continue
            logs = {"epoch": self.epoch, "step": int(self.steps[r]), "train_loss": train[r],
                    "lr": self.schedules.logged_lr(r, self.epoch, int(self.steps[r]))}
            if self.has_val[r]:
                logs["val_loss"] = val[r]
            self.schedules.end_epoch(r, logs.get("val_loss", train[r]))  # plateau: its metric
            self.history[job_index].append(logs)
            completed.append({**logs, "network": job_index})
            stopper = self.stoppers[r]
            status, reason = "", ""
            if stopper is not None:
                stop, reason = stopper.check(self.epoch, logs)
                if stopper.best_epoch == self.epoch and stopper.restore_best:
                    improved.append(r)
                if stop:
                    status = "early-stopped"
            if status:
                done.append((r, status, reason))
            elif self.epoch >= self.row_epochs[r] or self.steps[r] >= self.row_steps[r]:
                done.append((r, "finished", ""))
        if improved and self.best is not None:
            rows = torch.tensor(improved, device=self.device)
            self.best[rows] = self.theta[rows]
        if done:
            for r, status, reason in done:
                self._finish(r, status, reason)
            self._keep([r for r in range(len(self.rows)) if r not in {d[0] for d in done}])
        return completed

    def _finish(self, r: int, status: str, reason: str) -> None:
        job_index = self.rows[r]
        job, stopper, history = self.jobs[job_index], self.stoppers[r], self.history[job_index]
        restored = None
        weights = self.theta[r]
        if stopper is not None and stopper.restore_best and stopper.best_epoch >= 1:
            weights, restored = self.best[r], stopper.best_epoch
        if stopper is not None:
            best_epoch = stopper.best_epoch
        else:
            key = "val_loss" if history and "val_loss" in history[0] else "train_loss"
            values = [h[key] for h in history]
            best_epoch = int(np.argmin(values)) + 1 if values else -1
        self.results[job_index] = JobResult(
            status=status, stop_reason=reason, history=history, epochs=len(history),
            steps=int(self.steps[r]), best_epoch=best_epoch, restored_epoch=restored,
            state_dict=self._state_dict(job, weights) if self.return_weights else None)

    @torch.no_grad()
    def _state_dict(self, job: Job, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's own (unpadded) weights, as its model class's state dict."""
        key = id(job.model)  # one working copy per initial model (folds share it)
        if key not in self._scratch_models:
            self._scratch_models[key] = copy.deepcopy(job.model).to(dtype=self.dtype)
        model = self._scratch_models[key]
        for (w, b), (pw, pb) in zip(model.layers(), self.layout.views(flat.unsqueeze(0).cpu()),
                                    strict=True):
            w.copy_(pw[0, :w.shape[0], :w.shape[1]])
            b.copy_(pb[0, 0, :b.shape[0]])
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _keep(self, keep: list[int]) -> None:
        """Drop finished networks from the stack: they stay frozen and cost nothing more."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = [self.rows[r] for r in keep]
        if not keep:
            return
        self.theta = self.theta[idx]
        self.opt.select(np.array(keep))
        self.schedules.select(keep)
        for name in ("wmask", "l1", "l2", "best", "d_weight"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[idx])
        for name in ("offsets", "val_valid", "val_count", "x_val", "y_val"):
            setattr(self, name, getattr(self, name)[idx])
        for name in ("samplers", "stoppers", "row_steps", "row_epochs"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in keep])
        self.steps, self.has_val = self.steps[keep], self.has_val[keep]
        self.max_steps_a = np.array(self.row_steps)
        self.batch = max(s.batch_size for s in self.samplers)
        self._buffers()


def epoch_order(sampler: BatchSampler) -> torch.Tensor:
    """One epoch of ``sampler``'s batches, concatenated: the rows in the order they are seen.

    The same draws from the sampler's generator as ``torch.cat(list(sampler.epoch()))``, without
    slicing the epoch into batch tensors first (tests check that both agree).
    """
    if sampler.mode == "full":  # the whole split every step; no random draws
        return torch.arange(sampler.n, device=sampler.device)
    if sampler.mode == "shuffle":  # (no epoch_state snapshot: batched runs do not resume)
        return torch.randperm(sampler.n, generator=sampler.generator, device=sampler.device)
    return torch.cat(list(sampler.epoch()))


_GATHER_BYTES = 64 * 2**20  # the most an epoch's gathered batches take at once
_KEY_NAMES = ("activation, depth, optimizer family, loss, sampling, batch size, dtype, device and "
              "derivative targets (all or none)")


def _stopper(cfg: Config) -> EarlyStopping | None:
    es = cfg.early_stopping
    return EarlyStopping.from_config(es)
