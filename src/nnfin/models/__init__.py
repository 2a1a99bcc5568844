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

__all__ = ["MLP", "MLPLow", "Polynomial", "build_model"]


def build_model(cfg: ModelConfig, *, in_dim: int, out_dim: int) -> nn.Module:
    """Build the model a ``[model]`` table describes (float32, on the CPU)."""
    if cfg.kind == "polynomial":
        if in_dim != 1 or out_dim != 1:
            raise ConfigError(
                f"[model] kind = 'polynomial' fits one input and one output; the data has "
                f"{in_dim} input(s) and {out_dim} output(s) (use kind = 'mlp')"
            )
        return Polynomial(cfg.degree)
    cls = MLPLow if cfg.kind == "mlp-low" else MLP
    return cls(in_dim, out_dim, cfg.neurons, cfg.activation, cfg.init)
