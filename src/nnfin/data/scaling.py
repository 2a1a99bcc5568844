"""Standardization fitted on the training part only, stored with the run.

>>> import torch
>>> s = Standardizer.fit(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0]]))
>>> s.transform_x(torch.tensor([[3.0]])), s.inverse_y(torch.tensor([[1.0]]))
(tensor([[0.7071]]), tensor([[2.4142]]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Standardizer:
    """``(x - x_mean) / x_std`` for inputs and the same for outputs; identity where std = 0."""

    x_mean: torch.Tensor  # (in_dim,)
    x_std: torch.Tensor
    y_mean: torch.Tensor  # (out_dim,)
    y_std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor) -> Standardizer:
        """Fit on training data (std with Bessel's correction; a constant column keeps std 1)."""
        def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean = t.mean(0)
            std = t.std(0) if t.shape[0] > 1 else torch.ones_like(mean)
            return mean, torch.where(std > 0, std, torch.ones_like(std))

        return cls(*stats(x), *stats(y))

    @classmethod
    def identity(cls, in_dim: int, out_dim: int, dtype: torch.dtype = torch.float64) -> Standardizer:
        z = torch.zeros
        return cls(z(in_dim, dtype=dtype), torch.ones(in_dim, dtype=dtype),
                   z(out_dim, dtype=dtype), torch.ones(out_dim, dtype=dtype))

    def transform_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean.to(x)) / self.x_std.to(x)

    def transform_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_mean.to(y)) / self.y_std.to(y)

    def inverse_y(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.y_std.to(y) + self.y_mean.to(y)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors, for safetensors files."""
        return {f"scaler.{k}": getattr(self, k).detach().to("cpu", torch.float64).contiguous()
                for k in ("x_mean", "x_std", "y_mean", "y_std")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Any]) -> Standardizer | None:
        keys = ("x_mean", "x_std", "y_mean", "y_std")
        if not all(f"scaler.{k}" in tensors for k in keys):
            return None
        return cls(*(tensors[f"scaler.{k}"] for k in keys))
