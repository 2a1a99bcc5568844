"""Black–Scholes implied volatility: a vectorised safeguarded Newton solver and a
per-option :func:`scipy.optimize.brentq` reference.

The vectorised solver works on the *time value* ``V - intrinsic`` (the value of the
out-of-the-money option, see :func:`~nnfin.finance.black_scholes.bs_time_value`), which
keeps full relative precision for deep in-the-money prices. Each element keeps a
bracket ``[lo, hi]`` with ``price(lo) < target < price(hi)``; a Newton step that leaves
the bracket (or meets a vanishing vega) is replaced by bisection, so every iteration
either converges quadratically or halves the bracket. The start is the inflection point
``sqrt(2 |ln m + r tau| / tau)`` of ``sigma -> V`` (Manaster & Koehler, 1982).

>>> import torch
>>> from nnfin.finance.black_scholes import bs_price
>>> v = bs_price(1.1, 0.5, 0.03, 0.25)
>>> round(float(implied_vol(v, 1.1, 0.5, 0.03)), 12)
0.25
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from nnfin.finance.black_scholes import (
    ArrayLike,
    Option,
    as_f64,
    bs_intrinsic,
    bs_time_value,
    bs_vega,
    check_option,
)


def implied_vol(
    price: ArrayLike,
    m: ArrayLike,
    tau: ArrayLike,
    r: ArrayLike,
    option: Option = "call",
    *,
    sigma_max: float = 20.0,
    tol: float = 1e-14,
    max_iter: int = 200,
) -> torch.Tensor:
    """Implied volatility of ``V/K`` prices, elementwise; float64 tensor.

    Elements whose price is outside the no-arbitrage bounds (time value ``<= 0`` or
    ``>= min(m, e^{-r tau})``) or needs ``sigma > sigma_max`` come back as NaN.

    >>> round(float(implied_vol(0.055735, 1.0, 1.0, 0.05, option="put")), 4)
    0.2
    """
    option = check_option(option)
    price, m, tau, r = as_f64(price, m, tau, r)
    price, m, tau, r = (t.detach() for t in (price, m, tau, r))
    target = price - bs_intrinsic(m, tau, r, option)
    upper = torch.minimum(m, torch.exp(-r * tau))  # time value as sigma -> infinity
    valid = (target > 0) & (target < upper) & torch.isfinite(target)
    lo = torch.zeros_like(target)
    hi = torch.full_like(target, sigma_max)
    valid &= bs_time_value(m, tau, r, hi) > target
    sigma = torch.sqrt(2.0 * torch.abs(torch.log(m) + r * tau) / tau).clamp(0.05, sigma_max / 2)
    idx = torch.nonzero(valid.reshape(-1)).reshape(-1)  # the unconverged elements (flat view)
    flat = [t.reshape(-1) for t in (sigma, lo, hi, m, tau, r, target)]
    sigma, lo, hi, m, tau, r, target = flat
    for _ in range(max_iter):
        if idx.numel() == 0:
            break
        s, lo_i, hi_i = sigma[idx], lo[idx], hi[idx]
        m_i, tau_i, r_i = m[idx], tau[idx], r[idx]
        f = bs_time_value(m_i, tau_i, r_i, s) - target[idx]
        vega = bs_vega(m_i, tau_i, r_i, s)
        lo_i = torch.where(f < 0, s, lo_i)
        hi_i = torch.where(f > 0, s, hi_i)
        newton = s - f / vega
        ok = torch.isfinite(newton) & (newton > lo_i) & (newton < hi_i)
        step = torch.where(ok, newton, 0.5 * (lo_i + hi_i))
        done = (f == 0) | (torch.abs(step - s) <= tol * (1.0 + s)) | (hi_i - lo_i <= tol)
        sigma[idx], lo[idx], hi[idx] = step, lo_i, hi_i
        idx = idx[~done]
    sigma = sigma.reshape(valid.shape)
    return torch.where(valid, sigma, torch.full_like(sigma, math.nan))


def bs_price_scipy(m: float, tau: float, r: float, sigma: float, option: str = "call") -> float:
    """Plain-float Black–Scholes ``V/K`` with :data:`scipy.stats.norm` (a reference)."""
    sd = sigma * math.sqrt(tau)
    d1 = (math.log(m) + (r + 0.5 * sigma * sigma) * tau) / sd
    d2 = d1 - sd
    if option == "call":
        return m * norm.cdf(d1) - math.exp(-r * tau) * norm.cdf(d2)
    return math.exp(-r * tau) * norm.cdf(-d2) - m * norm.cdf(-d1)


def implied_vol_brentq(
    price: float,
    m: float,
    tau: float,
    r: float,
    option: str = "call",
    *,
    lo: float = 1e-6,
    hi: float = 10.0,
    xtol: float = 1e-14,
) -> float:
    """Implied volatility of one option by Brent's method on ``[lo, hi]``; NaN if the
    price is not bracketed. The paper's reference solver, slow but independent.

    >>> round(implied_vol_brentq(0.104506, 1.0, 1.0, 0.05), 4)
    0.2
    """
    check_option(option)

    def f(s: float) -> float:
        return bs_price_scipy(m, tau, r, s, option) - price

    f_lo, f_hi = f(lo), f(hi)
    if not (np.isfinite(f_lo) and np.isfinite(f_hi)) or f_lo * f_hi > 0:
        return math.nan
    return float(brentq(f, lo, hi, xtol=xtol, rtol=4 * np.finfo(float).eps, maxiter=500))
