"""Heston European option prices by the COS method, vectorised in torch float64.

Model (risk-neutral, ``K = 1`` so prices are ``V/K``)::

    dS = r S dt + sqrt(v) S dW1,   dv = kappa (vbar - v) dt + gamma sqrt(v) dW2,
    dW1 dW2 = rho dt,   S(0) = m = S0/K,   v(0) = v0.

The characteristic function of ``ln(S_T/S0)`` is used in the "little Heston trap"
form of Albrecher, Mayer, Schoutens & Tistaert (2007), which has no branch-cut jumps
of the complex logarithm. It is written here with ``kappa - i rho gamma u - d`` in the
rationalised form ``-gamma^2 (i u + u^2) / (kappa - i rho gamma u + d)``, so it stays
exact as the vol of vol ``gamma -> 0`` (where it tends to Black–Scholes with the
deterministic variance path).

COS method (Fang & Oosterlee, 2008, SIAM J. Sci. Comput. 31(2)): with
``x = ln(S0/K)`` and a truncation range ``[a, b]`` for ``y = ln(S_T/K)``::

    V = K e^{-r tau} sum'_{k<N} Re[phi(u_k) e^{i u_k (x - a)}] U_k,   u_k = k pi / (b - a)

where ``sum'`` halves the ``k = 0`` term. We price the **put** and obtain the call by
put–call parity ``C = P + S0 - K e^{-r tau}``: the put payoff is bounded by ``K``, so
the mass of the density cut off by the truncation costs at most ``K`` times that mass,
whereas the call's payoff ``S0 e^y - K`` grows exponentially and amplifies the
truncation error of the right tail (Fang & Oosterlee, 2008).

Truncation range: ``[a, b] = x + c1 -+ L sqrt(w)`` with ``c1 = r tau - w/2`` the mean of
``ln(S_T/S0)`` at ``gamma = 0`` and ``w = vbar tau + (v0 - vbar)(1 - e^{-kappa tau})/kappa``
the expected integrated variance, i.e. the ``gamma -> 0`` part of the second cumulant
``c2``. (The full Heston ``c2`` of Fang & Oosterlee divides by ``kappa^3`` and cancels
badly as ``kappa -> 0``, which the paper's range ``kappa in [0, 2]`` reaches.) With the
paper's ``N = 1500`` and ``L = 50`` (Liu, Oosterlee & Bohte, 2019) the range spans 50
standard deviations either side, and prices agree with a numerical integration of
the characteristic function to ~1e-12 over the paper's Heston ranges.

>>> import torch
>>> v = heston_cos_price(1.0, 1.0, 0.0, rho=-0.5711, kappa=1.5768, vbar=0.0398,
...                      gamma=0.5751, v0=0.0175)
>>> round(float(v[0]) * 100, 6)  # Fang & Oosterlee (2008), reference 5.785155450
5.785155
"""

from __future__ import annotations

import math

import torch

from nnfin.errors import ConfigError
from nnfin.finance.black_scholes import ArrayLike, Option, as_f64, check_option

DEFAULT_N = 1500
DEFAULT_L = 50.0
# peak bytes per (row, term) of one COS chunk: ~320 measured (float64 and complex128 temporaries)
COS_BYTES_PER_TERM = 400
# with the autograd graph of the price (heston_cos_sensitivities): ~970 measured
COS_BYTES_PER_TERM_GRAD = 1200
COS_TERMS, COS_TERMS_GRAD = 2_000_000, 700_000  # terms priced at once by default
# the inputs of a Heston price, in the order of the heston dataset's features
HESTON_INPUTS = ("moneyness", "tau", "r", "rho", "kappa", "vbar", "gamma", "v0")
_KAPPA_FLOOR = 1e-12  # kappa = 0 exactly has a removable 0/0; this floor is harmless


def _log1p_over_x(z: torch.Tensor) -> torch.Tensor:
    """``log(1 + z) / z`` with its limit 1 at ``z = 0`` (complex ``log1p`` is accurate
    for tiny ``z``, so only the exact zero needs care)."""
    zero = z == 0
    safe = torch.where(zero, 1.0 + 0.0j, z)
    return torch.where(zero, 1.0 + 0.0j, torch.log1p(safe) / safe)


def heston_cf(
    u: torch.Tensor,
    tau: torch.Tensor,
    r: torch.Tensor,
    rho: torch.Tensor,
    kappa: torch.Tensor,
    vbar: torch.Tensor,
    gamma: torch.Tensor,
    v0: torch.Tensor,
) -> torch.Tensor:
    """Characteristic function ``E[exp(i u ln(S_T/S0))]`` for real ``u`` (broadcast).

    >>> t = lambda x: torch.tensor([x], dtype=torch.float64)
    >>> phi = heston_cf(t(0.0), t(1.0), t(0.0), t(-0.5), t(1.0), t(0.04), t(0.3), t(0.04))
    >>> complex(phi[0])
    (1+0j)
    """
    kappa = kappa.clamp_min(_KAPPA_FLOOR)
    u = torch.as_tensor(u, dtype=torch.float64)
    g2 = gamma * gamma
    a = torch.complex(u * u, u)  # i u + u^2
    beta = torch.complex(kappa.expand_as(u * kappa), -rho * gamma * u)
    d = torch.sqrt(beta * beta + g2 * a)
    bd = beta + d
    q = -a / bd  # (beta - d) / gamma^2, without the cancellation as gamma -> 0
    q_bd = q / bd
    g = g2 * q_bd  # (beta - d) / (beta + d), |g| < 1
    one_minus_e = -torch.expm1(-d * tau)  # 1 - e^{-d tau}
    dd = q * one_minus_e / (1.0 - g * (1.0 - one_minus_e))
    # log((1 - g e) / (1 - g)) / gamma^2 = w * log1p(z) / z with z = gamma^2 w
    w = q_bd * one_minus_e / (1.0 - g)
    cc = (kappa * vbar) * (q * tau - 2.0 * w * _log1p_over_x(g2 * w))
    phi = torch.exp(cc + dd * v0 + torch.complex(torch.zeros_like(u * r), u * r * tau))
    return torch.where(u == 0, 1.0 + 0.0j, phi)


def _chi_psi(u: torch.Tensor, a: torch.Tensor, c: torch.Tensor, d: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine coefficients of ``e^y`` (chi) and ``1`` (psi) on ``[c, d]`` within ``[a, b]``."""
    ud, uc = u * (d - a), u * (c - a)
    ed, ec = torch.exp(d), torch.exp(c)
    chi = (torch.cos(ud) * ed - torch.cos(uc) * ec
           + u * (torch.sin(ud) * ed - torch.sin(uc) * ec)) / (1.0 + u * u)
    u_safe = torch.where(u == 0, torch.ones_like(u), u)
    psi = torch.where(u == 0, (d - c).expand_as(u), (torch.sin(ud) - torch.sin(uc)) / u_safe)
    return chi, psi


def _cos_put(m, tau, r, rho, kappa, vbar, gamma, v0, n_terms: int, big_l: float):
    x = torch.log(m)[:, None]
    tau_, r_ = tau[:, None], r[:, None]
    kap = kappa.clamp_min(_KAPPA_FLOOR)
    # mean integrated variance and the mean c1 of ln(S_T/S0)
    decay = -torch.expm1(-kap * tau) / kap
    w_mean = vbar * tau + (v0 - vbar) * decay
    center = x + (r * tau - 0.5 * w_mean)[:, None]
    half = big_l * torch.sqrt(w_mean.clamp_min(1e-12))[:, None]
    a, b = center - half, center + half
    upper = torch.minimum(torch.maximum(torch.zeros_like(a), a), b)  # put payoff on [a, 0]
    k = torch.arange(n_terms, dtype=torch.float64, device=m.device)[None, :]
    u = k * math.pi / (b - a)
    chi, psi = _chi_psi(u, a, a, upper)
    u_k = 2.0 / (b - a) * (psi - chi)
    phi = heston_cf(u, tau_, r_, rho[:, None], kappa[:, None], vbar[:, None],
                    gamma[:, None], v0[:, None])
    shift = u * (x - a)
    terms = (phi.real * torch.cos(shift) - phi.imag * torch.sin(shift)) * u_k
    terms[:, 0] *= 0.5
    return torch.exp(-r * tau) * terms.sum(dim=1)


def cos_memory_check(n_terms: int, rows: int, *, device: str | torch.device | None = None,
                     field: str = "n_terms", chunk_field: str = "chunk", chunk: int | None = None,
                     gradient: bool = False) -> int:
    """Refuse COS work that cannot fit: ``rows`` priced at once with ``n_terms`` terms.

    ``field`` names the number of terms; ``chunk_field`` the rows at once when the caller set
    ``chunk``; ``gradient`` counts the autograd graph kept for :func:`heston_cos_sensitivities`.
    Returns the bytes of the work. ``cos_memory_check(1500, 1333)`` is ~800 MB.
    """
    from nnfin.memory import format_count, require

    per_term = COS_BYTES_PER_TERM_GRAD if gradient else COS_BYTES_PER_TERM
    one_row = n_terms * per_term
    require(field, n_terms, one_row, "the COS terms", device=device,
            detail=f"{format_count(n_terms)} terms x {per_term} bytes per row")
    work = rows * one_row
    require(chunk_field if chunk is not None else field, chunk if chunk is not None else n_terms,
            work, "the COS terms", device=device,
            detail=f"{format_count(rows)} rows at once x {format_count(n_terms)} terms x "
                   f"{per_term} bytes")
    return work


def default_chunk(n_terms: int, *, gradient: bool = False) -> int:
    """Rows priced together by default: ~2M terms at once (a third of that with the gradient)."""
    return max(1, (COS_TERMS_GRAD if gradient else COS_TERMS) // int(n_terms))


def heston_cos_price(
    m: ArrayLike,
    tau: ArrayLike,
    r: ArrayLike,
    *,
    rho: ArrayLike,
    kappa: ArrayLike,
    vbar: ArrayLike,
    gamma: ArrayLike,
    v0: ArrayLike,
    option: Option = "call",
    n_terms: int = DEFAULT_N,
    big_l: float = DEFAULT_L,
    chunk: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Heston ``V/K`` for many parameter sets at once (1-D float64 tensor on CPU).

    ``n_terms`` is the COS ``N``, ``big_l`` the range width ``L``; ``chunk`` bounds the
    rows priced together (memory ~ ``chunk * n_terms * 320`` bytes).

    >>> p = heston_cos_price([0.9, 1.1], 0.5, 0.02, rho=-0.7, kappa=1.0, vbar=0.04,
    ...                      gamma=0.3, v0=0.04, option="put", n_terms=256, big_l=12)
    >>> bool(p[0] > p[1])
    True
    """
    price, _ = _price(m, tau, r, rho, kappa, vbar, gamma, v0, option=option, n_terms=n_terms,
                      big_l=big_l, chunk=chunk, device=device, gradient=False)
    return price


def heston_cos_sensitivities(
    m: ArrayLike,
    tau: ArrayLike,
    r: ArrayLike,
    *,
    rho: ArrayLike,
    kappa: ArrayLike,
    vbar: ArrayLike,
    gamma: ArrayLike,
    v0: ArrayLike,
    option: Option = "call",
    n_terms: int = DEFAULT_N,
    big_l: float = DEFAULT_L,
    chunk: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The COS price and its exact derivatives ``dV/dx`` for every input ``x`` of
    :data:`HESTON_INPUTS`, by autograd through the COS sum (the derivative of the very function
    that :func:`heston_cos_price` computes, truncation range included). Costs ~1.8x a price.

    >>> v, d = heston_cos_sensitivities([0.9, 1.1], 0.5, 0.02, rho=-0.7, kappa=1.0, vbar=0.04,
    ...                                 gamma=0.3, v0=0.04, n_terms=256, big_l=12)
    >>> sorted(d) == sorted(HESTON_INPUTS), bool(0 < d["moneyness"][0] < d["moneyness"][1] < 1)
    (True, True)
    """
    price, grads = _price(m, tau, r, rho, kappa, vbar, gamma, v0, option=option, n_terms=n_terms,
                          big_l=big_l, chunk=chunk, device=device, gradient=True)
    assert grads is not None
    return price, grads


def _price(m, tau, r, rho, kappa, vbar, gamma, v0, *, option, n_terms, big_l, chunk, device,
           gradient: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    option = check_option(option)
    if int(n_terms) < 2:
        raise ConfigError(f"n_terms = {n_terms!r} must be >= 2")
    if not big_l > 0:
        raise ConfigError(f"big_l = {big_l!r} must be > 0")
    cols = [t.detach().reshape(-1) for t in as_f64(m, tau, r, rho, kappa, vbar, gamma, v0,
                                                    device=device)]
    n_rows = cols[0].numel()
    given_chunk, chunk = chunk, chunk or default_chunk(int(n_terms), gradient=gradient)
    cos_memory_check(int(n_terms), min(chunk, max(n_rows, 1)), device=device, chunk=given_chunk,
                     gradient=gradient)
    parts, grads = [], []
    for start in range(0, n_rows, chunk):
        with torch.set_grad_enabled(gradient):
            sl = [c[start:start + chunk].clone().requires_grad_(gradient) for c in cols]
            value = _cos_put(*sl, n_terms=int(n_terms), big_l=float(big_l))
            if option == "call":
                value = value + sl[0] - torch.exp(-sl[1] * sl[2])
            if gradient:
                grads.append(torch.stack(torch.autograd.grad(value.sum(), sl), dim=1))
        parts.append(value.detach())
    empty = torch.empty(0, dtype=torch.float64, device=device)
    price = torch.cat(parts) if parts else empty
    # rounding can leave -1e-16 for worthless options; their derivatives are ~0 as well
    price = price.clamp_min(0.0).cpu()
    if not gradient:
        return price, None
    g = torch.cat(grads).cpu() if grads else empty.reshape(0, len(HESTON_INPUTS)).cpu()
    return price, {name: g[:, j] for j, name in enumerate(HESTON_INPUTS)}
