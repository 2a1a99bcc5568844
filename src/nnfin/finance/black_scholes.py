"""Black–Scholes prices and Greeks of European options, vectorised in torch float64.

Everything is in units of the strike (``K = 1``): the inputs are the moneyness
``m = S0/K``, the maturity ``tau`` (years), the rate ``r`` and the volatility
``sigma``; the output is ``V/K``. With ``K = 1`` the Greeks are

* ``delta = dV/dS0``                 (first derivative in the moneyness)
* ``gamma = d^2V/dS0^2``
* ``vega  = dV/dsigma``              (per unit of volatility, not per percent)
* ``theta = dV/dt = -dV/dtau``       (calendar-time decay per year; usually < 0)
* ``rho   = dV/dr``                  (per unit of rate)

For a strike ``K != 1`` the price and vega scale by ``K``, delta is unchanged and
gamma scales by ``1/K``.

>>> import torch
>>> v = bs_price(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.05]),
...              torch.tensor([0.2]))
>>> round(float(v[0]), 6)
0.104506
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from nnfin.errors import ConfigError, one_of

Option = Literal["call", "put"]
OPTIONS: tuple[str, ...] = ("call", "put")
GREEKS: tuple[str, ...] = ("delta", "gamma", "vega", "theta", "rho")
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

ArrayLike = torch.Tensor | float | list[float]


def check_option(option: object) -> str:
    """Return ``"call"`` or ``"put"``, or raise a one-line :class:`ConfigError`."""
    if option not in OPTIONS:
        raise ConfigError(f"option = {option!r}: {one_of(str(option), OPTIONS)}")
    return str(option)


def as_f64(*values: object, device: str | torch.device | None = None) -> list[torch.Tensor]:
    """Convert array-likes to broadcast float64 tensors (keeps autograd for tensors)."""
    tensors = [
        v.to(dtype=torch.float64, device=device) if isinstance(v, torch.Tensor)
        else torch.tensor(np.asarray(v, dtype=np.float64), device=device)
        for v in values
    ]
    return list(torch.broadcast_tensors(*tensors))


def _d1_d2(
    m: torch.Tensor, tau: torch.Tensor, r: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sqrt_tau = torch.sqrt(tau)
    sd = sigma * sqrt_tau
    d1 = (torch.log(m) + (r + 0.5 * sigma * sigma) * tau) / sd
    return d1, d1 - sd, sqrt_tau


def bs_price(
    m: ArrayLike, tau: ArrayLike, r: ArrayLike, sigma: ArrayLike, option: Option = "call"
) -> torch.Tensor:
    """European option value ``V/K`` for moneyness ``m = S0/K`` (differentiable).

    ``call = m N(d1) - e^{-r tau} N(d2)``, ``put = e^{-r tau} N(-d2) - m N(-d1)``,
    floored at 0 against rounding.

    >>> round(float(bs_price(1.0, 1.0, 0.05, 0.2, option="put")), 6)
    0.055735
    """
    option = check_option(option)
    m, tau, r, sigma = as_f64(m, tau, r, sigma)
    d1, d2, _ = _d1_d2(m, tau, r, sigma)
    disc = torch.exp(-r * tau)
    ndtr = torch.special.ndtr
    call = option == "call"
    value = m * ndtr(d1) - disc * ndtr(d2) if call else disc * ndtr(-d2) - m * ndtr(-d1)
    return torch.clamp(value, min=0.0)  # rounding can leave -1e-17 for worthless options


def bs_time_value(
    m: ArrayLike, tau: ArrayLike, r: ArrayLike, sigma: ArrayLike
) -> torch.Tensor:
    """Time value ``V - max(S0 - K e^{-r tau}, 0)`` of a call, in units of ``K``.

    By put–call parity this equals the value of the out-of-the-money option (the put
    when ``m > e^{-r tau}``, else the call), which is how it is computed here: without
    the cancellation of ``V - intrinsic`` for deep in-the-money options. It is the same
    for puts (``V_put - max(K e^{-r tau} - S0, 0)``).

    >>> float(bs_time_value(1.5, 1.0, 0.0, 0.01)) < 1e-100
    True
    """
    m, tau, r, sigma = as_f64(m, tau, r, sigma)
    call = bs_price(m, tau, r, sigma, "call")
    put = bs_price(m, tau, r, sigma, "put")
    return torch.where(m > torch.exp(-r * tau), put, call)


def bs_intrinsic(m: ArrayLike, tau: ArrayLike, r: ArrayLike, option: Option = "call") -> torch.Tensor:
    """Discounted intrinsic value ``max(+-(m - e^{-r tau}), 0)``: the ``sigma -> 0`` limit."""
    option = check_option(option)
    m, tau, r = as_f64(m, tau, r)
    fwd = m - torch.exp(-r * tau)
    return torch.clamp(fwd if option == "call" else -fwd, min=0.0)


def bs_vega(m: ArrayLike, tau: ArrayLike, r: ArrayLike, sigma: ArrayLike) -> torch.Tensor:
    """``dV/dsigma = m phi(d1) sqrt(tau)`` (same for calls and puts)."""
    m, tau, r, sigma = as_f64(m, tau, r, sigma)
    d1, _, sqrt_tau = _d1_d2(m, tau, r, sigma)
    return m * _INV_SQRT_2PI * torch.exp(-0.5 * d1 * d1) * sqrt_tau


def bs_greeks(
    m: ArrayLike, tau: ArrayLike, r: ArrayLike, sigma: ArrayLike, option: Option = "call"
) -> dict[str, torch.Tensor]:
    """Closed-form ``delta, gamma, vega, theta, rho`` (see the module docstring).

    >>> g = bs_greeks(1.0, 1.0, 0.05, 0.2)
    >>> round(float(g["delta"]), 6), round(float(g["vega"]), 6)
    (0.636831, 0.37524)
    """
    option = check_option(option)
    m, tau, r, sigma = as_f64(m, tau, r, sigma)
    d1, d2, sqrt_tau = _d1_d2(m, tau, r, sigma)
    ndtr = torch.special.ndtr
    pdf1 = _INV_SQRT_2PI * torch.exp(-0.5 * d1 * d1)
    disc = torch.exp(-r * tau)
    gamma = pdf1 / (m * sigma * sqrt_tau)
    vega = m * pdf1 * sqrt_tau
    decay = -m * pdf1 * sigma / (2.0 * sqrt_tau)
    if option == "call":
        delta = ndtr(d1)
        theta = decay - r * disc * ndtr(d2)
        rho = tau * disc * ndtr(d2)
    else:
        delta = ndtr(d1) - 1.0
        theta = decay + r * disc * ndtr(-d2)
        rho = -tau * disc * ndtr(-d2)
    return {"delta": delta, "gamma": gamma, "vega": vega, "theta": theta, "rho": rho}
