"""Delta hedging of a book of European calls along simulated paths (pure NumPy).

A *market* is a set of simulated paths of the spot (and of any state the pricer needs, e.g. the
Heston variance) on a time grid, with the constant inputs of the pricer:

* :func:`simulate_gbm`    - geometric Brownian motion, exact log-normal steps (Black–Scholes);
* :func:`simulate_heston` - Heston by the full-truncation Euler scheme (Lord, Koekkoek & van
  Dijk, 2010): the variance may go negative between steps, only ``max(v, 0)`` enters the drift
  and the diffusion.

:func:`hedge_book` sells a :class:`Book` of calls at the model price, holds the delta of the book
in the underlying, rebalances at every step of the grid and keeps the rest in a bank account at
the rate ``r``; at the end of the grid (the horizon) the book is bought back at the model price
(its payoff where it expires). The P&L per path is the hedge portfolio minus the book's value,
in units of the initial spot. The delta and the price come from functions of a frame of pricer
inputs (``moneyness = S/K``, ``tau``, the market's constant inputs and its state), so any
pricer plugs in: the closed form, a COS price, or a trained network (:func:`nnfin.finance.greeks`).

With the exact delta, the P&L comes only from hedging in discrete time: its mean is ~0 under the
risk-neutral drift and its standard deviation shrinks like ``1/sqrt(steps)``.

>>> from nnfin.finance.black_scholes import bs_greeks, bs_price
>>> market = simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.25, steps=63, paths=2000, seed=0)
>>> book = Book(strikes=(0.9, 1.0, 1.1), maturity=0.9)
>>> price = lambda f: bs_price(f["moneyness"], f["tau"], f["r"], f["sigma"]).numpy()
>>> delta = lambda f: bs_greeks(f["moneyness"], f["tau"], f["r"], f["sigma"])["delta"].numpy()
>>> pnl = hedge_book(market, book, delta, price)
>>> pnl.shape, bool(abs(pnl.mean()) < 3 * pnl.std() / np.sqrt(2000))
((2000,), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nnfin.errors import ConfigError

TRADING_DAYS = 252
PricerFn = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Market:
    """Simulated paths: ``spot`` (paths, steps + 1) on ``times`` (steps + 1,) in years.

    ``params`` are the pricer's constant inputs (``r``, ``sigma``; or ``r``, ``rho``, ``kappa``,
    ``vbar``, ``gamma`` for Heston) and ``state`` its inputs that move along the paths, each
    (paths, steps + 1) (Heston: ``v0``, the current variance)."""

    spot: np.ndarray
    times: np.ndarray
    r: float
    params: dict[str, float]
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def paths(self) -> int:
        return int(self.spot.shape[0])

    @property
    def steps(self) -> int:
        return int(self.spot.shape[1] - 1)


@dataclass(frozen=True)
class Book:
    """Short one European call per strike (units of the initial spot), all of one maturity."""

    strikes: Sequence[float] = (0.9, 1.0, 1.1)
    maturity: float = 0.9
    option: str = "call"

    def __post_init__(self) -> None:
        if not self.strikes or any(not (math.isfinite(k) and k > 0) for k in self.strikes):
            raise ConfigError(f"book strikes = {list(self.strikes)!r} must be numbers > 0")
        if not (math.isfinite(self.maturity) and self.maturity > 0):
            raise ConfigError(f"book maturity = {self.maturity!r} must be a number > 0")
        if self.option != "call":
            raise ConfigError(f"book option = {self.option!r}: the hedged book holds calls")


def _check(name: str, value: float, *, low: float | None = 0.0, strict: bool = True) -> float:
    value = float(value)
    ok = math.isfinite(value) and (low is None or (value > low if strict else value >= low))
    if not ok:
        rule = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ConfigError(f"{name} = {value!r} must be a finite number{rule}")
    return value


def _grid(horizon: float, steps: int, paths: int) -> np.ndarray:
    _check("horizon", horizon)
    for name, v in (("steps", steps), ("paths", paths)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ConfigError(f"{name} = {v!r} must be a whole number >= 1")
    return np.linspace(0.0, horizon, steps + 1)


def simulate_gbm(s0: float, *, r: float, sigma: float, horizon: float, steps: int, paths: int,
                 seed: int = 0, mu: float | None = None) -> Market:
    """GBM paths ``dS = mu S dt + sigma S dW`` (``mu`` defaults to ``r``, the risk-neutral drift),
    sampled exactly on ``steps`` equal steps up to ``horizon`` (years), seeded.

    >>> m = simulate_gbm(1.0, r=0.0, sigma=0.2, horizon=1.0, steps=4, paths=3, seed=1)
    >>> m.spot.shape, m.params
    ((3, 5), {'r': 0.0, 'sigma': 0.2})
    """
    times = _grid(horizon, steps, paths)
    s0, sigma = _check("s0", s0), _check("sigma", sigma)
    r = _check("r", r, low=None)
    mu = r if mu is None else _check("mu", mu, low=None)
    dt = horizon / steps
    z = np.random.default_rng(seed).standard_normal((paths, steps))
    log_steps = (mu - 0.5 * sigma**2) * dt + sigma * math.sqrt(dt) * z
    log_s = np.concatenate([np.zeros((paths, 1)), np.cumsum(log_steps, axis=1)], axis=1)
    return Market(s0 * np.exp(log_s), times, r, {"r": r, "sigma": sigma})


def simulate_heston(s0: float, v0: float, *, r: float, kappa: float, vbar: float, gamma: float,
                    rho: float, horizon: float, steps: int, paths: int, seed: int = 0,
                    substeps: int = 1) -> Market:
    """Heston paths by full-truncation Euler, ``substeps`` Euler steps per grid step, seeded:

    ``v+ = max(v, 0)``, ``v <- v + kappa (vbar - v+) dt + gamma sqrt(v+ dt) Z_v``,
    ``log S <- log S + (r - v+/2) dt + sqrt(v+ dt) Z_S``, ``corr(Z_S, Z_v) = rho``.
    The state ``v0`` of the returned market is ``max(v, 0)`` on the grid (the pricer's input).

    >>> m = simulate_heston(1.0, 0.04, r=0.0, kappa=1.5, vbar=0.04, gamma=0.3, rho=-0.7,
    ...                     horizon=0.5, steps=10, paths=4, seed=0)
    >>> m.spot.shape, sorted(m.state), sorted(m.params)
    ((4, 11), ['v0'], ['gamma', 'kappa', 'r', 'rho', 'vbar'])
    """
    times = _grid(horizon, steps, paths)
    s0, v0 = _check("s0", s0), _check("v0", v0, strict=False)
    r = _check("r", r, low=None)
    kappa, vbar, gamma = (_check(n, v, strict=False) for n, v in
                          (("kappa", kappa), ("vbar", vbar), ("gamma", gamma)))
    rho = _check("rho", rho, low=None)
    if not -1.0 <= rho <= 1.0:
        raise ConfigError(f"rho = {rho!r} must lie in [-1, 1]")
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ConfigError(f"substeps = {substeps!r} must be a whole number >= 1")
    rng = np.random.default_rng(seed)
    dt = horizon / (steps * substeps)
    sq = math.sqrt(dt)
    log_s = np.zeros(paths)
    v = np.full(paths, v0)
    spot, var = np.empty((paths, steps + 1)), np.empty((paths, steps + 1))
    spot[:, 0], var[:, 0] = s0, v0
    for k in range(steps):
        for _ in range(substeps):
            z_s = rng.standard_normal(paths)
            z_v = rho * z_s + math.sqrt(1.0 - rho * rho) * rng.standard_normal(paths)
            vp = np.maximum(v, 0.0)
            root = np.sqrt(vp) * sq
            log_s += (r - 0.5 * vp) * dt + root * z_s
            v = v + kappa * (vbar - vp) * dt + gamma * root * z_v
        spot[:, k + 1], var[:, k + 1] = s0 * np.exp(log_s), np.maximum(v, 0.0)
    params = {"r": r, "rho": rho, "kappa": kappa, "vbar": vbar, "gamma": gamma}
    return Market(spot, times, r, params, {"v0": var})


def option_inputs(market: Market, book: Book, step: int) -> pd.DataFrame:
    """The pricer's inputs at grid ``step``: one row per (option, path), option-major, with
    ``moneyness = S/K``, ``tau = maturity - t``, the market's params and its state."""
    strikes = np.asarray(book.strikes, dtype=np.float64)
    spot = market.spot[:, step]
    n_opt, n_paths = len(strikes), market.paths
    cols: dict[str, np.ndarray] = {
        "moneyness": (spot[None, :] / strikes[:, None]).ravel(),
        "tau": np.full(n_opt * n_paths, book.maturity - market.times[step]),
    }
    for name, value in market.params.items():
        cols[name] = np.full(n_opt * n_paths, value)
    for name, values in market.state.items():
        cols[name] = np.tile(values[:, step], n_opt)
    return pd.DataFrame(cols)


def _book_value(market: Market, book: Book, step: int, price: PricerFn) -> np.ndarray:
    """Value of the book per path at ``step``: sum of ``K * V/K`` (the payoff at expiry)."""
    strikes = np.asarray(book.strikes, dtype=np.float64)
    frame = option_inputs(market, book, step)
    if book.maturity - market.times[step] <= 1e-12:
        per_unit = np.maximum(frame["moneyness"].to_numpy() - 1.0, 0.0)
    else:
        per_unit = np.asarray(price(frame), dtype=np.float64)
    return (per_unit.reshape(len(strikes), market.paths) * strikes[:, None]).sum(axis=0)


def _book_delta(market: Market, book: Book, step: int, delta: PricerFn) -> np.ndarray:
    """Shares that hedge the book per path: ``sum_K dV/dS = sum_K d(V/K)/d(S/K)``."""
    frame = option_inputs(market, book, step)
    d = np.asarray(delta(frame), dtype=np.float64)
    return d.reshape(len(book.strikes), market.paths).sum(axis=0)


def hedge_book(market: Market, book: Book, delta: PricerFn | None, price: PricerFn) -> np.ndarray:
    """Hedging P&L per path of a short ``book`` hedged with ``delta`` at every grid step.

    ``price`` values the book at the start and at the horizon (the same for every hedger, so
    P&Ls differ by the hedge only); ``delta = None`` holds no hedge (the unhedged book). Returns
    (paths,) P&Ls at the horizon, in units of the initial spot.
    """
    if book.maturity < market.times[-1] - 1e-12:
        raise ConfigError(f"book maturity = {book.maturity:g} ends before the horizon "
                          f"{market.times[-1]:g} of the paths")
    dt = np.diff(market.times)
    cash = _book_value(market, book, 0, price)  # the premium received
    shares = np.zeros(market.paths)
    for k in range(market.steps):
        if delta is not None:
            target = _book_delta(market, book, k, delta)
            cash -= (target - shares) * market.spot[:, k]
            shares = target
        cash *= math.exp(market.r * dt[k])
    hedge = cash + shares * market.spot[:, -1]
    return hedge - _book_value(market, book, market.steps, price)


def pnl_summary(pnls: dict[str, np.ndarray], reference: str) -> pd.DataFrame:
    """Mean, std, quantiles of each hedger's P&L and its std relative to ``reference``'s.

    >>> pnl_summary({"a": np.array([1.0, -1.0]), "b": np.array([2.0, -2.0])}, "a")["std_ratio"].tolist()
    [1.0, 2.0]
    """
    ref_std = float(np.std(pnls[reference], ddof=1))
    rows = []
    for name, p in pnls.items():
        std = float(np.std(p, ddof=1))
        rows.append({"hedge": name, "mean": float(np.mean(p)), "std": std,
                     "std_ratio": std / ref_std if ref_std > 0 else math.nan,
                     "q01": float(np.quantile(p, 0.01)), "q99": float(np.quantile(p, 0.99)),
                     "paths": len(p)})
    return pd.DataFrame(rows)


__all__ = ["TRADING_DAYS", "Book", "Market", "hedge_book", "option_inputs", "pnl_summary",
           "simulate_gbm", "simulate_heston"]
