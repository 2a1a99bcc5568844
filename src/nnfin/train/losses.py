"""Losses and the lecture's L1/L2 penalties.

The penalty is added to the loss *before* ``backward()``, so it really shapes the gradient.

>>> import torch
>>> fn = make_loss("sse")
>>> float(fn(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])))
5.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nnfin.config import PenaltyConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: str, *, huber_delta: float = 1.0) -> LossFn:
    """``mse`` (mean), ``sse`` (the lecture's sum of squares), ``mae`` or ``huber``."""
    if name == "mse":
        return F.mse_loss
    if name == "sse":
        return lambda pred, target: F.mse_loss(pred, target, reduction="sum")
    if name == "mae":
        return F.l1_loss
    if name == "huber":
        return lambda pred, target: F.huber_loss(pred, target, delta=huber_delta)
    raise ValueError(f"unknown loss {name!r}")


def penalized_parameters(model: nn.Module, include_bias: bool) -> list[torch.Tensor]:
    """Parameters the penalty applies to; biases (1-D, named ``b*``/``*bias``) can be left out."""
    if include_bias:
        return [p for p in model.parameters() if p.requires_grad]
    out = []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_bias = leaf == "bias" or (leaf.startswith("b") and leaf[1:].isdigit())
        if p.requires_grad and not is_bias:
            out.append(p)
    return out


def make_penalty(cfg: PenaltyConfig, model: nn.Module) -> Callable[[], torch.Tensor] | None:
    """``lambda1 * sum |w| + lambda2 * sum w^2`` over the chosen parameters, or ``None``."""
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    params: Iterable[torch.Tensor] = penalized_parameters(model, cfg.include_bias)
    params = list(params)

    def penalty() -> torch.Tensor:
        total = params[0].new_zeros(())
        if cfg.l1:
            total = total + cfg.l1 * sum(p.abs().sum() for p in params)
        if cfg.l2:
            total = total + cfg.l2 * sum(p.pow(2).sum() for p in params)
        return total

    return penalty
