"""The lecture's polynomial model ``y = a + b x + c x^2 + d x^3`` (any degree).

Coefficients are drawn one scalar ``torch.randn(())`` at a time, in order, as float32 -
exactly as the slides draw ``a, b, c, d`` - so a seeded run reproduces the lecture.

>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> Polynomial(degree=3).coefficients.shape
torch.Size([4])
"""

from __future__ import annotations

import torch
from torch import nn


class Polynomial(nn.Module):
    """``sum_k coefficients[k] * x**k`` for one input feature and one output."""

    def __init__(self, degree: int = 3) -> None:
        super().__init__()
        self.degree = degree
        draws = [torch.randn((), dtype=torch.float32) for _ in range(degree + 1)]
        self.coefficients = nn.Parameter(torch.stack(draws))  # (degree + 1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1) -> (N, 1)
        c = self.coefficients
        y = c[0] + c[1] * x if self.degree >= 1 else c[0].expand_as(x)
        for k in range(2, self.degree + 1):
            y = y + c[k] * x**k
        return y

    def formula(self, digits: int = 3) -> str:
        """The fitted polynomial as text, e.g. ``y = 1.068 - 0.146x - 0.484x^2 + 0.102x^3``."""
        terms = []
        for k, c in enumerate(self.coefficients.detach().cpu().tolist()):
            mono = "" if k == 0 else ("x" if k == 1 else f"x^{k}")
            sign = "-" if c < 0 else "+"
            terms.append((sign, f"{abs(c):.{digits}f}{mono}"))
        first_sign, first = terms[0]
        text = ("-" if first_sign == "-" else "") + first
        return "y = " + text + "".join(f" {s} {t}" for s, t in terms[1:])


def least_squares(x: torch.Tensor, y: torch.Tensor, degree: int) -> tuple[torch.Tensor, float]:
    """Exact least-squares coefficients (``torch.linalg.lstsq``, float64) and their SSE."""
    x64, y64 = x.detach().double().cpu().reshape(-1), y.detach().double().cpu().reshape(-1)
    vander = torch.stack([x64**k for k in range(degree + 1)], dim=1)  # (N, degree + 1)
    coef = torch.linalg.lstsq(vander, y64.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    sse = float(((vander @ coef - y64) ** 2).sum())
    return coef, sse
