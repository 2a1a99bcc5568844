"""Model families behind one config interface: ``polynomial``, ``mlp-low`` and ``mlp``.

>>> from nnfin.config import ModelConfig
>>> build_model(ModelConfig(kind="mlp-low", neurons=[6, 6]), in_dim=1, out_dim=1)
MLPLow()
"""

from __future__ import annotations

from torch import nn

from nnfin.config import ModelConfig
from nnfin.errors import ConfigError
from nnfin.models.mlp import MLP, MLPLow
from nnfin.models.polynomial import Polynomial

__all__ = ["MLP", "MLPLow", "Polynomial", "build_model", "check_memory"]


# copies of the parameters while training: weights, gradients and two Adam moments
PARAMETER_COPIES = 4
# values kept per hidden unit and row of a batch: activations, their inputs and their gradients
ACTIVATION_COPIES = 3


def check_memory(cfg: ModelConfig, *, in_dim: int, out_dim: int, rows: int = 64,
                 itemsize: int = 4, device: object = None) -> int:
    """Refuse a network that cannot fit in memory while it trains; return the bytes it needs.

    ``parameters x itemsize x`` :data:`PARAMETER_COPIES` (weights, gradients, Adam states),
    plus the activations of ``rows`` rows (one batch). No allocation, no cost for small nets.

    >>> check_memory(ModelConfig(neurons=[6, 6]), in_dim=1, out_dim=1)
    11728
    """
    if cfg.kind == "polynomial":
        return 0
    from itertools import pairwise

    from nnfin.memory import format_count, require

    widths = [in_dim, *cfg.neurons, out_dim]
    params = sum((a + 1) * b for a, b in pairwise(widths))
    activations = rows * sum(widths) * itemsize * ACTIVATION_COPIES
    nbytes = params * itemsize * PARAMETER_COPIES + activations
    require("[model] neurons", list(cfg.neurons), nbytes, "the model", device=device,
            detail=f"{format_count(params)} parameters x {itemsize} bytes x {PARAMETER_COPIES} for "
                   f"weights, gradients and optimizer states, plus the activations of {rows} rows")
    return nbytes


def build_model(cfg: ModelConfig, *, in_dim: int, out_dim: int) -> nn.Module:
    """Build the model a ``[model]`` table describes (float32, on the CPU)."""
    check_memory(cfg, in_dim=in_dim, out_dim=out_dim)
    if cfg.kind == "polynomial":
        if in_dim != 1 or out_dim != 1:
            raise ConfigError(
                f"[model] kind = 'polynomial' fits one input and one output; the data has "
                f"{in_dim} input(s) and {out_dim} output(s) (use kind = 'mlp')"
            )
        return Polynomial(cfg.degree)
    cls = MLPLow if cfg.kind == "mlp-low" else MLP
    return cls(in_dim, out_dim, cfg.neurons, cfg.activation, cfg.init)
