"""SGD, Adam/AdamW and RMSprop on a stack of networks, with hyperparameters per network.

Each update is a function of the flat (M, P) parameters, gradients and state, with the
hyperparameters as (M, 1) columns, and follows ``torch.optim``'s formulas term by term
(``_single_tensor_sgd``, ``_single_tensor_adam``, ``_single_tensor_rmsprop``): Adam's bias
corrections are computed in double precision per network and ``eps`` is added after
``sqrt(v) / sqrt(1 - beta2^t)``, as there. ``gd`` is SGD without momentum or weight decay.

On the CPU, Adam and AdamW run torch's fused kernels (the ones ``torch.optim.Adam(...,
fused=True)``/``AdamW`` and nnfin's single-model loop call) with one call per distinct
``(lr, betas, eps, weight_decay)``: networks that share these hyperparameters and sit next to
each other in the stack (the engine orders them so) are one block of rows, updated as one
tensor; otherwise, or while some of them are frozen or at other step counts, the call takes
their rows one by one, each with its own step count.

:class:`StackedOptimizer` keeps the state, updates ``theta`` in place and freezes networks that
are not ``active``: their parameters and state keep their values.

>>> from nnfin.config import OptimConfig
>>> theta = torch.ones(2, 3)                                # (M, P)
>>> opt = StackedOptimizer([OptimConfig(name="sgd", lr=0.1), OptimConfig(name="gd", lr=0.5)],
...                        theta)
>>> opt.step(theta, torch.ones(2, 3), active=None)        # theta - lr * grad, lr per network
tensor([[0.9000, 0.9000, 0.9000],
        [0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnfin.config import OptimConfig

FAMILIES = {"gd": "sgd", "sgd": "sgd", "adam": "adam", "adamw": "adam", "rmsprop": "rmsprop"}
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop's default; nnfin does not change it


def family(name: str) -> str:
    """The update rule an optimizer name shares with others: ``sgd``, ``adam`` or ``rmsprop``."""
    return FAMILIES[name]


def sgd_update(theta: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, *,
               lr: torch.Tensor, momentum: torch.Tensor | None, weight_decay: torch.Tensor | None,
               nesterov: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``torch.optim.SGD`` (dampening 0): returns new ``(theta, momentum_buffer)``.

    A zero buffer and ``momentum`` 0 give the plain step ``theta - lr * grad`` exactly.
    """
    if weight_decay is not None:
        grad = torch.addcmul(grad, weight_decay, theta)  # grad.add(theta, alpha=wd): fused
    if momentum is not None and buf is not None:
        buf = buf * momentum + grad  # the first step: 0 * m + g = g, torch's clone(grad)
        grad = buf if nesterov is None else torch.where(
            nesterov, torch.addcmul(grad, momentum, buf), buf)
    return torch.addcmul(theta, -lr, grad), buf


def adam_update(theta: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                exp_avg_sq: torch.Tensor, *, step_size: torch.Tensor, bc2_sqrt: torch.Tensor,
                one_minus_beta1: torch.Tensor, beta2: torch.Tensor,
                one_minus_beta2: torch.Tensor, eps: torch.Tensor,
                weight_decay: torch.Tensor | None, decay_factor: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.optim.Adam`` (coupled ``weight_decay``) and ``AdamW`` (``decay_factor``
    ``= 1 - lr * weight_decay``): returns new ``(theta, exp_avg, exp_avg_sq)``.

    ``step_size = lr / (1 - beta1^t)`` and ``bc2_sqrt = sqrt(1 - beta2^t)`` per network;
    ``1 - beta`` comes in precomputed, as torch computes it in double precision.
    """
    if weight_decay is not None:
        grad = torch.addcmul(grad, weight_decay, theta)
    if decay_factor is not None:
        theta = theta * decay_factor
    exp_avg = exp_avg.lerp(grad, one_minus_beta1)
    # torch's addcmul_(g, g, value=1 - beta2) rounds once: v * beta2 + fma((1 - beta2) g, g)
    exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, one_minus_beta2 * grad, grad)
    denom = exp_avg_sq.sqrt() / bc2_sqrt + eps
    return theta + (-step_size) * exp_avg / denom, exp_avg, exp_avg_sq


def rmsprop_update(theta: torch.Tensor, grad: torch.Tensor, square_avg: torch.Tensor,
                   buf: torch.Tensor | None, *, lr: torch.Tensor, momentum: torch.Tensor | None,
                   eps: torch.Tensor, weight_decay: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``torch.optim.RMSprop`` (alpha 0.99, not centered): new ``(theta, square_avg, buf)``."""
    if weight_decay is not None:
        grad = torch.addcmul(grad, weight_decay, theta)
    square_avg = torch.addcmul(square_avg * RMSPROP_ALPHA, (1 - RMSPROP_ALPHA) * grad, grad)
    avg = square_avg.sqrt() + eps
    if momentum is not None and buf is not None:
        buf = buf * momentum + grad / avg
        return torch.addcmul(theta, -lr, buf), square_avg, buf
    return theta + (-lr) * grad / avg, square_avg, None


class StackedOptimizer:
    """State and per-network hyperparameters for one optimizer family over an (M, P) stack.

    ``configs`` holds one :class:`OptimConfig` per network, all of one :func:`family`.
    """

    def __init__(self, configs: Sequence[OptimConfig], theta: torch.Tensor, *,
                 fused: bool | None = None) -> None:
        families = {family(c.name) for c in configs}
        if len(families) != 1:
            raise ValueError(f"one optimizer family per stack, got {sorted(families)}")
        self.family = families.pop()
        self.names = [c.name for c in configs]
        is_gd = np.array([c.name == "gd" for c in configs])
        self.lr = np.array([c.lr for c in configs], dtype=np.float64)
        self.beta1 = np.array([c.betas[0] for c in configs], dtype=np.float64)
        self.beta2 = np.array([c.betas[1] for c in configs], dtype=np.float64)
        decay = np.where(is_gd, 0.0, [c.weight_decay for c in configs])  # GD ignores it
        decoupled = np.array([c.name == "adamw" for c in configs])
        momentum = np.where(is_gd, 0.0, [c.momentum for c in configs])
        self.momentum = np.asarray(momentum, dtype=np.float64)
        self._adamw, self._decay = decoupled, np.asarray(decay, dtype=np.float64)
        self._eps = np.array([c.eps for c in configs], dtype=np.float64)
        self.steps = np.zeros(len(configs), dtype=np.int64)  # optimizer steps taken, per network
        col = self._column
        like = theta
        self.h: dict[str, torch.Tensor | None] = {
            "lr": col(self.lr, like), "eps": col([c.eps for c in configs], like),
            "one_minus_beta1": col(1.0 - self.beta1, like), "beta2": col(self.beta2, like),
            "one_minus_beta2": col(1.0 - self.beta2, like),
            "momentum": col(momentum, like) if momentum.any() else None,
            "nesterov": (col([c.nesterov for c in configs], like, torch.bool)
                         if any(c.nesterov for c in configs) else None),
            "weight_decay": (col(np.where(decoupled, 0.0, decay), like)
                             if (decay * ~decoupled).any() else None),
            "decay_factor": (col(1.0 - self.lr * np.where(decoupled, decay, 0.0), like)
                             if (decay * decoupled).any() else None),
        }
        zeros = torch.zeros_like
        self.state: dict[str, torch.Tensor | None] = {"buf": None, "exp_avg": None,
                                                      "exp_avg_sq": None, "square_avg": None}
        if self.family == "sgd":
            self.state["buf"] = zeros(theta) if self.h["momentum"] is not None else None
        elif self.family == "adam":
            self.state["exp_avg"], self.state["exp_avg_sq"] = zeros(theta), zeros(theta)
        else:
            self.state["square_avg"] = zeros(theta)
            self.state["buf"] = zeros(theta) if self.h["momentum"] is not None else None
        available = self.family == "adam" and theta.device.type == "cpu" and hasattr(
            torch, "_fused_adam_") and hasattr(torch, "_fused_adamw_")
        self.fused = available if fused is None else bool(fused) and available
        self._calls: list[tuple] = []  # see _fused_adam
        self._prepared_for: list[int] | None = None
        if self.fused:
            self._kernel_groups = self._group_rows()

    def _group_rows(self) -> dict[tuple, np.ndarray]:
        """Rows per fused kernel call: one per distinct (adamw?, beta1, beta2, eps, lr, decay)."""
        keys = zip(self._adamw.tolist(), self.beta1.tolist(), self.beta2.tolist(),
                   self._eps.tolist(), self.lr.tolist(), self._decay.tolist(), strict=True)
        members: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            members.setdefault(key, []).append(i)
        return {k: np.array(v, dtype=np.int64) for k, v in members.items()}

    def set_rates(self, lr: np.ndarray, momentum: np.ndarray | None = None) -> None:
        """Per-network learning rates (M,) and, when a schedule cycles it, momentum (M,):
        Adam's beta1, SGD's or RMSprop's momentum. A no-op when nothing changed.

        The fused Adam calls keep their blocks of rows while networks that shared a call
        still share their rates (the folds of one candidate on one schedule); otherwise the
        rows are grouped anew.
        """
        same_lr = np.array_equal(lr, self.lr)
        current = self.beta1 if self.family == "adam" else self.momentum
        if same_lr and (momentum is None or np.array_equal(momentum, current)):
            return
        like = self.h["lr"]
        assert like is not None
        col = self._column
        if not same_lr:
            self.lr = np.array(lr, dtype=np.float64)
            self.h["lr"] = col(self.lr, like)
            if self.h["decay_factor"] is not None:
                self.h["decay_factor"] = col(1.0 - self.lr * np.where(self._adamw, self._decay, 0.0),
                                             like)
        if momentum is not None:
            if self.family == "adam":
                self.beta1 = np.array(momentum, dtype=np.float64)
                self.h["one_minus_beta1"] = col(1.0 - self.beta1, like)
            else:
                self.momentum = np.array(momentum, dtype=np.float64)
                if self.h["momentum"] is not None:
                    self.h["momentum"] = col(self.momentum, like)
        if self.fused:
            groups = self._group_rows()
            if self._calls and [v.tolist() for v in groups.values()] == \
                    [v.tolist() for v in self._kernel_groups.values()]:
                for key, call in zip(groups, self._calls, strict=True):  # same blocks: new rates
                    call[1].update(lr=key[4], beta1=key[1])
            else:
                self._calls, self._prepared_for = [], None
            self._kernel_groups = groups

    @staticmethod
    def _column(values, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Per-network values as an (M, 1) column on ``like``'s device (float64 -> its dtype)."""
        t = torch.as_tensor(np.asarray(values, dtype=np.float64 if dtype is None else bool))
        return t.to(device=like.device, dtype=dtype or like.dtype).view(-1, 1)

    def step(self, theta: torch.Tensor, grad: torch.Tensor, *, active: np.ndarray | None
             ) -> torch.Tensor:
        """One update of ``theta`` (M, P) in place (``grad`` may be overwritten); returns it.

        ``active`` (M,) bool: the networks that step; the others keep parameters and state.
        """
        self.steps += 1 if active is None else active
        if self.fused:
            self._fused_adam(theta, grad, active)
            return theta
        new_theta = self._functional_step(theta, grad, active)
        return theta.copy_(new_theta)

    def _fused_adam(self, theta: torch.Tensor, grad: torch.Tensor, active: np.ndarray | None
                    ) -> None:
        s = self.state
        tensors = (theta, grad, s["exp_avg"], s["exp_avg_sq"])
        if self._prepared_for != [t.data_ptr() for t in tensors]:
            # per kernel call: its members and their block of rows as one tensor (when they
            # are contiguous) or their rows; one step-count tensor serves every call
            self._prepared_for = [t.data_ptr() for t in tensors]
            self._step_count = torch.zeros((), dtype=torch.float32)
            self._calls = []
            for (adamw, beta1, beta2, eps, lr, decay), members in self._kernel_groups.items():
                a, b = int(members[0]), int(members[-1]) + 1
                rows = [slice(a, b)] if b - a == len(members) else members.tolist()
                kernel = torch._fused_adamw_ if adamw else torch._fused_adam_
                kwargs = {"lr": lr, "beta1": beta1, "beta2": beta2, "weight_decay": decay,
                          "eps": eps, "amsgrad": False, "maximize": False}
                self._calls.append((kernel, kwargs, members,
                                    [[t[r] for r in rows] for t in tensors],
                                    [self._step_count] * len(rows)))
        same = bool((self.steps == self.steps[0]).all())  # the usual step: one count for all
        if same:
            self._step_count.fill_(float(self.steps[0]))
        for kernel, kwargs, members, lists, steps in self._calls:
            if active is not None and not active[members].all():
                members = members[active[members]]  # frozen networks: not in the call
                if len(members) == 0:
                    continue
                lists = [[t[i] for i in members.tolist()] for t in tensors]
                steps = [self._step_count] * len(members)
            if not same:
                counts = self.steps[members]
                if (counts == counts[0]).all():
                    self._step_count.fill_(float(counts[0]))
                else:  # networks at different step counts (folds of unequal size): row by row
                    lists = [[t[i] for i in members.tolist()] for t in tensors]
                    steps = [torch.scalar_tensor(float(c), dtype=torch.float32)
                             for c in counts.tolist()]
            kernel(*lists, [], steps, **kwargs)

    def _functional_step(self, theta: torch.Tensor, grad: torch.Tensor,
                         active: np.ndarray | None) -> torch.Tensor:
        h, s = self.h, self.state
        new: dict[str, torch.Tensor | None]
        if self.family == "sgd":
            t, buf = sgd_update(theta, grad, s["buf"], lr=h["lr"], momentum=h["momentum"],
                                weight_decay=h["weight_decay"], nesterov=h["nesterov"])
            new = {"buf": buf}
        elif self.family == "adam":
            step_size, bc2_sqrt = self._bias_corrections(theta)
            t, m, v = adam_update(theta, grad, s["exp_avg"], s["exp_avg_sq"], step_size=step_size,
                                  bc2_sqrt=bc2_sqrt, one_minus_beta1=h["one_minus_beta1"],
                                  beta2=h["beta2"], one_minus_beta2=h["one_minus_beta2"],
                                  eps=h["eps"], weight_decay=h["weight_decay"],
                                  decay_factor=h["decay_factor"])
            new = {"exp_avg": m, "exp_avg_sq": v}
        else:
            t, sq, buf = rmsprop_update(theta, grad, s["square_avg"], s["buf"], lr=h["lr"],
                                        momentum=h["momentum"], eps=h["eps"],
                                        weight_decay=h["weight_decay"])
            new = {"square_avg": sq, "buf": buf}
        if active is None:
            self.state.update(new)
            return t
        keep = torch.as_tensor(active).to(theta.device).view(-1, 1)  # (M, 1)
        for key, value in new.items():
            old = s[key]
            if value is not None and old is not None:
                s[key] = torch.where(keep, value, old)
        return torch.where(keep, t, theta)

    def _bias_corrections(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)`` per network, (M, 1) each, with
        Python's float power as torch.optim (NumPy's vectorised power may differ in the last bit)."""
        step_size, bc2_sqrt = [], []
        for lr, b1, b2, t in zip(self.lr.tolist(), self.beta1.tolist(), self.beta2.tolist(),
                                 np.maximum(self.steps, 1).tolist(), strict=True):
            step_size.append(lr / (1 - b1 ** float(t)))
            bc2_sqrt.append((1 - b2 ** float(t)) ** 0.5)
        return self._column(step_size, like), self._column(bc2_sqrt, like)

    def select(self, rows: torch.Tensor | np.ndarray) -> None:
        """Keep only the networks ``rows`` (when finished networks leave the stack)."""
        idx = np.asarray(rows)
        self.steps, self.lr = self.steps[idx], self.lr[idx]
        self.beta1, self.beta2 = self.beta1[idx], self.beta2[idx]
        self.momentum, self._eps = self.momentum[idx], self._eps[idx]
        self._adamw, self._decay = self._adamw[idx], self._decay[idx]
        self.names = [self.names[i] for i in idx]
        for store in (self.h, self.state):
            for key, value in store.items():
                if value is not None:
                    store[key] = value[torch.as_tensor(idx, device=value.device)]
        if self.fused:
            remap = {old: new for new, old in enumerate(idx.tolist())}
            groups = {k: np.array([remap[i] for i in v.tolist() if i in remap], dtype=np.int64)
                      for k, v in self._kernel_groups.items()}
            self._kernel_groups = {k: v for k, v in groups.items() if len(v)}
            self._calls, self._prepared_for = [], None
