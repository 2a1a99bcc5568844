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

import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import lr_scheduler

from nnfin.config import OptimConfig

CLOSURE_OPTIMIZERS = ("lbfgs",)

# torch.optim wraps an optimizer's bookkeeping (add_param_group, zero_grad, state_dict,
# load_state_dict) in torch._disable_dynamo and its step in _use_grad_for_differentiable, and
# both import torch._dynamo on their first call: ~1.5 s on a CPU, the first time any optimizer
# is made or stepped, for training that torch.compile never sees. Until something else has
# loaded torch._dynamo (then nothing can be saved and torch's own methods run), nnfin's
# optimizers call the same functions without those wrappers: the same arithmetic, state dicts
# and hooks (the profiler hook torch adds to ``step`` stays), without the import.
try:  # a private helper of torch.optim: without it (another torch), torch's own step runs
    from torch.optim.optimizer import _use_grad_for_differentiable

    _USE_GRAD_CODE: Any = _use_grad_for_differentiable(lambda self: None).__code__
except (ImportError, AttributeError, TypeError):
    _USE_GRAD_CODE = None


def _dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def _torch_step(cls: type) -> Callable[..., Any]:
    """``cls.step`` as torch defines it, without the profiler hook torch adds to a class's
    ``step`` when its first optimizer is made (the hook wraps nnfin's step instead)."""
    fn = cls.step
    while getattr(fn, "hooked", False):
        fn = fn.__wrapped__
    return fn


class _Eager:
    """Mixin for a ``torch.optim.Optimizer`` subclass: torch's methods without the wrappers that
    import torch._dynamo while it is not loaded (add_param_group, zero_grad, state_dict,
    load_state_dict)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        return _eager(self, "add_param_group", param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        return _eager(self, "zero_grad", set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _eager(self, "state_dict")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return _eager(self, "load_state_dict", state_dict)


def _eager(opt: Any, name: str, *args: Any) -> Any:
    fn = getattr(super(_Eager, type(opt)), name)  # torch's, as the optimizer's class has it
    if not _dynamo_loaded():
        fn = inspect.unwrap(fn)  # inside torch._disable_dynamo's functools.wraps wrapper
    return fn(opt, *args)


def _eager_step(base: type) -> Callable[..., Any]:
    """``base.step`` (decorated with ``_use_grad_for_differentiable``) without the decorator's
    ``import torch._dynamo`` and graph breaks while torch._dynamo is not loaded; the decorator's
    grad mode is kept."""

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        torch_step = _torch_step(base)
        if _dynamo_loaded() or _USE_GRAD_CODE is None \
                or getattr(torch_step, "__code__", None) is not _USE_GRAD_CODE:
            return torch_step(self, closure)
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return torch_step.__wrapped__(self, closure)
        finally:
            torch.set_grad_enabled(prev)

    step.__doc__ = base.step.__doc__
    return step


def _fused_adam_step(opt: torch.optim.Optimizer, decoupled: bool) -> bool:
    """Adam's fused update as ``torch.optim.Adam(fused=True).step()`` runs it once every
    parameter has its state: the same two calls (the step counts ``+ 1``, then
    ``torch._fused_adam_``/``_fused_adamw_``) on the same tensors with the same
    hyperparameters, without rebuilding torch's bookkeeping every step (about a sixth of a
    small network's step on a CPU). Returns ``False``, having changed nothing, where torch's own
    step must run: a first step (state to create), a setting this path does not take
    (amsgrad, maximize, capturable, differentiable, a tensor ``lr``, gradient scaling) or
    parameters on several devices or dtypes. ``decoupled`` (AdamW's decay) is taken where a
    group does not say (each group's ``decoupled_weight_decay`` does, as in torch's step)."""
    if getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
        return False
    calls = []
    state = opt.state
    for group in opt.param_groups:
        if not group.get("fused") or group.get("amsgrad") or group.get("maximize") \
                or group.get("capturable") or group.get("differentiable") \
                or isinstance(group["lr"], torch.Tensor):
            return False
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            s = state.get(p)
            if not s or grad.is_sparse:
                return False
            params.append(p)
            grads.append(grad)
            exp_avgs.append(s["exp_avg"])
            exp_avg_sqs.append(s["exp_avg_sq"])
            steps.append(s["step"])
        if params:
            first = params[0]
            if any(p.device != first.device or p.dtype != first.dtype for p in params):
                return False
            calls.append((group, params, grads, exp_avgs, exp_avg_sqs, steps))
    with torch.no_grad():
        for group, params, grads, exp_avgs, exp_avg_sqs, steps in calls:
            beta1, beta2 = group["betas"]
            kernel = (torch._fused_adamw_ if group.get("decoupled_weight_decay", decoupled)
                      else torch._fused_adam_)
            torch._foreach_add_(steps, 1)
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                   lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                   eps=group["eps"], maximize=False)
    return True


def _adam_step(base: type) -> Callable[..., Any]:
    """``base.step`` with :func:`_fused_adam_step` taking the usual fused CPU/GPU step."""
    torch_step = _eager_step(base)
    fast = hasattr(torch, "_fused_adam_") and hasattr(torch, "_fused_adamw_")

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None and fast \
                and _fused_adam_step(self, isinstance(self, torch.optim.AdamW)):
            return None
        return torch_step(self, closure)

    step.__doc__ = base.step.__doc__
    return step


class Adam(_Eager, torch.optim.Adam):
    step = _adam_step(torch.optim.Adam)


class AdamW(_Eager, torch.optim.AdamW):
    step = _adam_step(torch.optim.AdamW)


class SGD(_Eager, torch.optim.SGD):
    step = _eager_step(torch.optim.SGD)


class RMSprop(_Eager, torch.optim.RMSprop):
    step = _eager_step(torch.optim.RMSprop)


class LBFGS(_Eager, torch.optim.LBFGS):
    pass


class GD(_Eager, torch.optim.Optimizer):
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
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name in ("adam", "adamw"):
        cls = Adam if cfg.name == "adam" else AdamW
        return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                   weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name == "rmsprop":
        return RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay, foreach=True)
    if cfg.name == "lbfgs":
        search = None if cfg.line_search == "none" else cfg.line_search
        return LBFGS(params, lr=cfg.lr, max_iter=cfg.max_iter,
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
