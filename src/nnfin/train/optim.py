"""Optimizers and learning-rate schedules from ``[optim]``.

``gd`` is the lecture's manual update ``p -= lr * p.grad; p.grad = None`` written as a
``torch.optim.Optimizer`` so schedules, state dicts and checkpoints treat it like any other.

>>> import torch
>>> from nnfin.config import OptimConfig
>>> w = torch.nn.Parameter(torch.ones(2))
>>> opt = build_optimizer(OptimConfig(name="gd", lr=0.1), [w])
>>> (w**2).sum().backward(); opt.step(); w.detach()
tensor([0.8000, 0.8000])
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from nnfin.config import OptimConfig

CLOSURE_OPTIMIZERS = ("lbfgs",)


class GD(torch.optim.Optimizer):
    """Plain gradient descent, exactly the slides' loop: ``p -= lr * p.grad; p.grad = None``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p -= group["lr"] * p.grad
                    p.grad = None
        return loss


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused Adam/AdamW/SGD kernels exist for floating tensors on CPU, CUDA and MPS (torch>=2.4)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps") for p in params)


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name``, with fused kernels where torch has them."""
    params = list(params)
    fused = _fused_ok(params)
    if cfg.name == "gd":
        return GD(params, lr=cfg.lr)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                   weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay, foreach=True)
    if cfg.name == "lbfgs":
        search = None if cfg.line_search == "none" else cfg.line_search
        return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=cfg.max_iter,
                                 history_size=cfg.history_size, line_search_fn=search)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # the config validates names first


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int
) -> tuple[lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None, str]:
    """The schedule and when to step it: ``"epoch"``, ``"step"`` or ``"plateau"`` (with a metric)."""
    if cfg.schedule == "none":
        return None, "epoch"
    if cfg.schedule == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch"
    if cfg.schedule == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma), "epoch"
    if cfg.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr), "epoch"
    if cfg.schedule == "onecycle":
        max_lr = cfg.max_lr if cfg.max_lr is not None else 10 * cfg.lr
        group = optimizer.param_groups[0]
        has_momentum = "betas" in group or group.get("momentum", 0) > 0
        sched = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, cycle_momentum=has_momentum,
                                        total_steps=max(2, epochs * steps_per_epoch))
        return sched, "step"
    if cfg.schedule == "plateau":
        sched = lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.factor, patience=cfg.patience)
        return sched, "plateau"
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
