"""Batched model calibration through a differentiable price function, and of a trained surrogate.

Calibrating a pricing model means finding, for each quoted surface ``s``, the parameters
``theta_s`` whose prices match the quotes: ``min_theta mean_q (f(x_q, theta_s) - y_q)^2`` over
the quotes ``q`` of that surface (market inputs ``x_q``: moneyness, maturity, rate...). With a
trained surrogate as ``f`` (Liu, Oosterlee & Bohte's CaNN, 2019; Horvath, Muguruza & Tomas,
*Deep Learning Volatility*, 2021) every price and every gradient is one pass through a network,
so all surfaces are calibrated together as **one** batched problem:

* **Bounded reparametrisation.** ``theta = low + (high - low) * sigmoid(z)``: the optimizer moves
  the free ``z`` and the parameters never leave ``[low, high]`` (the surrogate's training
  ranges: a network is never asked to extrapolate).
* **Multi-start.** ``candidates`` points of a Latin hypercube of the ranges are scored on every
  surface in one forward pass (on up to :data:`SCREEN_QUOTES` quotes of each); the ``starts``
  best of them per surface are optimized together, and the best result per surface is kept.
* **Optimizers.** ``method="lm"`` (the default): Levenberg–Marquardt, batched. A quote's price
  depends on its own surface's parameters only, so one backward pass through the network gives
  every surface's Jacobian; each surface then takes its own damped Gauss–Newton step (a 5 x 5
  solve for Heston) with its own damping, and converged surfaces leave the batch. A coarse
  stage on at most :data:`COARSE_QUOTES` quotes per surface goes most of the way cheaply; after
  :data:`PRUNE_AFTER` steps each surface keeps its best start only. It needs 10-25 passes where
  ``method="adam-lbfgs"`` needs ~200: Adam on the sum of the per-surface mean squared errors
  (the surfaces share no parameter, so the gradient of the sum is each surface's own
  gradient), then L-BFGS with a closure and a strong-Wolfe line search.

:func:`polish` refines each surface with an exact pricer by ``scipy.optimize.least_squares``
(trust-region reflective, inside the same bounds), starting from the batched answer.

:func:`calibrate` (``nnfin.finance.calibrate``) does it for a trained price (or implied-vol)
surrogate and a table of quotes: the quotes' columns are the surrogate's market inputs, the
inputs missing from them are the parameters, found inside the training ranges; every bad quote
is a one-line error naming its row and column.

>>> import torch
>>> from nnfin.finance.black_scholes import bs_price
>>> def f(x, p):  # market inputs (moneyness, tau, r), parameter sigma
...     return bs_price(x[:, 0], x[:, 1], x[:, 2], p[:, 0])
>>> x = torch.tensor([[0.9, 0.5, 0.02], [1.0, 0.5, 0.02], [1.1, 1.0, 0.02]] * 2, dtype=torch.float64)
>>> y = f(x, torch.tensor([[0.2]] * 3 + [[0.35]] * 3, dtype=torch.float64))
>>> fit = calibrate_surfaces(f, x, y, [0, 0, 0, 1, 1, 1], [(0.01, 1.0)])
>>> [round(float(s), 6) for s in fit.params[:, 0]]
[0.2, 0.35]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from nnfin.errors import ConfigError, DataError, did_you_mean
from nnfin.finance.calibration_options import DEFAULTS, METHODS

PriceFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``f(market, params) -> prices``: ``market`` (n, k) and ``params`` (n, p) row by row, ``(n,)`` out,
differentiable in ``params``."""

# |z| at most this: sigmoid(-20) = 2e-9, so a parameter never sits exactly on a bound (where its
# gradient vanishes and a pricer may refuse it, e.g. a variance of 0)
Z_MAX = 20.0
MAX_STEP = 2.0  # largest Levenberg–Marquardt step in the free variables
PRUNE_AFTER = 3  # Levenberg–Marquardt steps of every start before each surface keeps its best
COARSE_QUOTES = 12  # quotes per surface of the coarse Levenberg–Marquardt stage
SCREEN_QUOTES = 8  # quotes per surface that score the Latin-hypercube candidates


@dataclass
class BatchFit:
    """What :func:`calibrate_surfaces` found: one row per surface."""

    params: np.ndarray               # (surfaces, p), inside the bounds
    rmse: np.ndarray                 # (surfaces,) of f at params against the quotes
    iterations: int                  # Adam steps + L-BFGS iterations (shared by all surfaces)
    time_s: float                    # wall time of the whole batch
    best_start: np.ndarray           # (surfaces,) index of the kept start among the optimized
    evaluations: int = 0             # passes of all rows through f (forward + backward)
    history: list[float] = field(default_factory=list, repr=False)  # objective per iteration


@dataclass
class PolishFit:
    """What :func:`polish` found: one row per surface."""

    params: np.ndarray               # (surfaces, p)
    rmse: np.ndarray                 # (surfaces,) of the exact pricer at params
    rmse_start: np.ndarray           # (surfaces,) of the exact pricer at the starting params
    evaluations: np.ndarray          # (surfaces,) exact-pricer calls (with their Jacobian)
    time_s: np.ndarray               # (surfaces,) wall time per surface


def check_bounds(bounds: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``(p, 2)`` float64 array of ``(low, high)`` with finite ``low < high``, or a one-line error.

    >>> check_bounds([(0.0, 1.0)]).shape
    (1, 2)
    """
    b = np.asarray(bounds, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] == 0:
        raise ConfigError(f"bounds must be one (low, high) pair per parameter, got shape {b.shape}")
    bad = ~(np.isfinite(b).all(axis=1) & (b[:, 0] < b[:, 1]))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"bounds[{i}] = {tuple(b[i])!r} must be finite with low < high")
    return b


def to_params(z: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The bounded parameters ``low + (high - low) * sigmoid(z)`` of the free variables ``z``."""
    return low + (high - low) * torch.sigmoid(z)


def to_free(theta: torch.Tensor, low: torch.Tensor, high: torch.Tensor, eps: float = 1e-9
            ) -> torch.Tensor:
    """The inverse of :func:`to_params` (parameters on a bound move ``eps`` of the range inside)."""
    u = ((theta - low) / (high - low)).clamp(eps, 1 - eps)
    return torch.log(u) - torch.log1p(-u)


def latin_hypercube(bounds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of a Latin hypercube of the box ``bounds`` (p, 2), shape (n, p).

    >>> latin_hypercube(np.array([[0.0, 1.0], [10.0, 20.0]]), 4).shape
    (4, 2)
    """
    from nnfin.finance.sampling import unit_sample

    u = unit_sample(bounds.shape[0], n=n, seed=seed, sampler="lhs")
    return bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * u


def _surface_index(surface: Sequence[int] | np.ndarray | torch.Tensor, n_rows: int) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(surface), dtype=torch.long).reshape(-1)
    if idx.numel() != n_rows:
        raise ConfigError(f"surface has {idx.numel()} entries for {n_rows} quotes")
    if n_rows == 0:
        raise ConfigError("no quotes to calibrate to")
    if int(idx.min()) < 0 or not torch.equal(torch.unique(idx), torch.arange(int(idx.max()) + 1)):
        raise ConfigError("surface must number the surfaces 0, 1, ..., n_surfaces - 1")
    return idx


def calibrate_surfaces(
    price_fn: PriceFunction,
    market: torch.Tensor | np.ndarray,
    quotes: torch.Tensor | np.ndarray,
    surface: Sequence[int] | np.ndarray | torch.Tensor,
    bounds: Sequence[Sequence[float]] | np.ndarray,
    *,
    method: str = DEFAULTS["method"],
    candidates: int = DEFAULTS["candidates"],
    starts: int = DEFAULTS["starts"],
    iterations: int = DEFAULTS["iterations"],
    coarse: int = DEFAULTS["coarse"],
    adam_steps: int = DEFAULTS["adam_steps"],
    adam_lr: float = DEFAULTS["adam_lr"],
    lbfgs_steps: int = DEFAULTS["lbfgs_steps"],
    history_size: int = DEFAULTS["history_size"],
    seed: int = DEFAULTS["seed"],
    dtype: torch.dtype = torch.float64,
    threads: int | None = DEFAULTS["threads"],
) -> BatchFit:
    """Calibrate every surface at once: ``params[s]`` minimises the mean squared error of
    ``price_fn`` against the quotes of surface ``s`` inside ``bounds``.

    ``market`` (n, k) and ``quotes`` (n,) are the quoted rows, ``surface`` (n,) numbers each
    row's surface ``0..S-1``; ``bounds`` is ``(low, high)`` per parameter. ``candidates`` Latin
    hypercube points are scored and the ``starts`` best per surface optimized by ``method``:

    * ``"lm"`` - Levenberg–Marquardt, batched: every problem's Jacobian from one backward pass
      through ``price_fn`` (each quote depends on its own surface's parameters only), a
      ``p x p`` damped Gauss–Newton solve per problem, its own damping; ``coarse`` steps on at
      most :data:`COARSE_QUOTES` quotes per surface first, then at most ``iterations`` on all
      of them; converged problems leave the batch;
    * ``"adam-lbfgs"`` - ``adam_steps`` of Adam at ``adam_lr`` in the free variables on the sum of
      the problems' errors, then up to ``lbfgs_steps`` L-BFGS iterations with a closure.

    ``price_fn`` is called with ``dtype`` tensors. ``threads`` sets torch's intra-op threads for
    the call (restored after): the batches are small, and one thread is the fastest on a busy
    machine, where more threads spin against each other; ``None`` keeps torch's setting.

    >>> fit = calibrate_surfaces(f, x, y, surface_ids, [(0.01, 1.0)])  # doctest: +SKIP
    >>> fit.params.shape, fit.rmse.shape  # doctest: +SKIP
    ((2, 1), (2,))
    """
    if method not in METHODS:
        raise ConfigError(f"method = {method!r}: choose one of {', '.join(METHODS)}"
                          f"{did_you_mean(str(method), METHODS)}")
    for name, value in (("candidates", candidates), ("starts", starts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r} must be a whole number >= 1")
    for name, value in (("iterations", iterations), ("coarse", coarse), ("adam_steps", adam_steps),
                        ("lbfgs_steps", lbfgs_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} = {value!r} must be a whole number >= 0")
    if not (isinstance(adam_lr, int | float) and math.isfinite(adam_lr) and adam_lr > 0):
        raise ConfigError(f"adam_lr = {adam_lr!r} must be a number > 0")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"threads = {threads!r} must be a whole number >= 1 (or None)")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        problem = _Problem(price_fn, market, quotes, surface, bounds, dtype)
        start_time = time.perf_counter()
        z = problem.starts(candidates, starts, seed)
        if method == "lm":
            z, used = problem.coarse(z, coarse) if coarse and problem.k > 0 else (z, 0)
            z, more = problem.levenberg_marquardt(z, iterations)
            used += more
        else:
            z, used = problem.adam_lbfgs(z, adam_steps, adam_lr, lbfgs_steps, history_size)
        return problem.best(z, used, start_time)
    finally:
        torch.set_num_threads(before)


class _Problem:
    """The quotes of all surfaces, the bounds, and the passes through ``price_fn``."""

    def __init__(self, price_fn: PriceFunction, market, quotes, surface, bounds,
                 dtype: torch.dtype) -> None:
        b = check_bounds(bounds)
        x, y = (v.detach().to(dtype=dtype, copy=True) if torch.is_tensor(v)
                else torch.from_numpy(np.array(v, dtype=np.float64)).to(dtype) for v in (market, quotes))
        y = y.reshape(-1)
        if x.dim() != 2 or x.shape[0] != y.shape[0]:
            raise ConfigError(f"market has shape {tuple(x.shape)} for {y.shape[0]} quotes; "
                              f"expected ({y.shape[0]}, k)")
        self.f, self.x, self.y, self.dtype = price_fn, x, y, dtype
        self.idx = _surface_index(surface, y.shape[0])
        self.n_surf, self.n_par = int(self.idx.max()) + 1, b.shape[0]
        self.bounds = b
        self.low, self.high = (torch.as_tensor(b[:, i], dtype=dtype) for i in (0, 1))
        self.count = torch.bincount(self.idx, minlength=self.n_surf).to(dtype)
        self.scale = float(y.abs().mean()) or 1.0  # any scale has the same minimiser
        self.evaluations = 0
        self.history: list[float] = []
        self.k = 1
        self.final_mse: torch.Tensor | None = None  # (k, S) at the end, where the optimizer knows it
        self.origin: torch.Tensor | None = None  # (S,) the start each surface kept after coarse()

    def _rows(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quotes repeated for ``k`` starts: market rows, targets, problem of each row."""
        problem = (torch.arange(k)[:, None] * self.n_surf + self.idx[None, :]).reshape(-1)
        return self.x.repeat(k, 1), self.y.repeat(k), problem

    def mse(self, theta: torch.Tensor) -> torch.Tensor:
        """theta (k, S, p) -> (k, S) mean squared scaled errors of every problem."""
        self.evaluations += 1
        k = theta.shape[0]
        rows, y, problem = self._rows(k)
        price = self.f(rows, theta.reshape(k * self.n_surf, self.n_par)[problem]).reshape(-1)
        r = (price.to(self.dtype) - y) / self.scale
        sse = torch.zeros(k * self.n_surf, dtype=self.dtype).index_add(0, problem, r * r)
        return sse.reshape(k, self.n_surf) / self.count

    def subsample(self, most: int) -> torch.Tensor:
        """A mask of at most ``most`` quotes per surface, spread over its rows (every step-th)."""
        order = torch.argsort(self.idx, stable=True)
        first = torch.cumsum(self.count.long(), 0) - self.count.long()
        rank = torch.empty_like(self.idx)
        rank[order] = torch.arange(len(self.idx)) - first[self.idx[order]]
        step = torch.clamp(torch.ceil(self.count / most), min=1).long()[self.idx]
        return (rank % step) == 0

    def coarse(self, z: torch.Tensor, iterations: int) -> tuple[torch.Tensor, int]:
        """Levenberg–Marquardt on at most :data:`COARSE_QUOTES` quotes per surface, then each
        surface's best start only (1, S, p): most of the way at a fraction of the cost."""
        pick = self.subsample(COARSE_QUOTES)
        sub = _Problem(self.f, self.x[pick], self.y[pick], self.idx[pick], self.bounds, self.dtype)
        z, used = sub.levenberg_marquardt(z, iterations)
        self.evaluations += sub.evaluations
        self.history += sub.history
        assert sub.final_mse is not None
        keep = torch.argmin(torch.nan_to_num(sub.final_mse, nan=math.inf), dim=0)
        self.origin = keep
        return z[keep, torch.arange(self.n_surf)][None], used

    def starts(self, candidates: int, starts: int, seed: int) -> torch.Tensor:
        """The free variables (k, S, p) of the ``starts`` best Latin-hypercube points per surface,
        scored on at most :data:`SCREEN_QUOTES` quotes of each surface (spread over its rows)."""
        cand = torch.as_tensor(latin_hypercube(self.bounds, candidates, seed), dtype=self.dtype)
        pick = self.subsample(SCREEN_QUOTES)
        x, y, idx = self.x[pick], self.y[pick], self.idx[pick]
        n = torch.bincount(idx, minlength=self.n_surf).to(self.dtype)
        chunk = max(1, 65536 // max(1, len(y)))  # candidates scored per pass
        scores = []
        with torch.no_grad():
            for i in range(0, candidates, chunk):
                c = cand[i:i + chunk]
                m = len(c)
                price = self.f(x.repeat(m, 1), c.repeat_interleave(len(y), dim=0)).reshape(m, -1)
                r2 = ((price.to(self.dtype) - y) / self.scale) ** 2
                scores.append(torch.zeros(m, self.n_surf, dtype=self.dtype).index_add(1, idx, r2) / n)
                self.evaluations += 1
        scores_all = torch.cat(scores)  # (candidates, S)
        self.k = min(starts, candidates)
        scores = scores_all
        best = torch.topk(scores, self.k, dim=0, largest=False).indices  # (k, S)
        return to_free(cand[best], self.low, self.high).detach().clone()

    def adam_lbfgs(self, z: torch.Tensor, adam_steps: int, adam_lr: float, lbfgs_steps: int,
                   history_size: int) -> tuple[torch.Tensor, int]:
        z = z.clone().requires_grad_(True)

        def objective() -> torch.Tensor:
            return self.mse(to_params(z, self.low, self.high)).sum()

        if adam_steps:
            adam = torch.optim.Adam([z], lr=adam_lr)
            for _ in range(adam_steps):
                adam.zero_grad()
                loss = objective()
                loss.backward()
                adam.step()
                with torch.no_grad():
                    z.clamp_(-Z_MAX, Z_MAX)
                self.history.append(float(loss.detach()))
        used = adam_steps
        if lbfgs_steps:
            lbfgs = torch.optim.LBFGS([z], lr=1.0, max_iter=lbfgs_steps, history_size=history_size,
                                      tolerance_grad=0.0, tolerance_change=0.0,
                                      line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                lbfgs.zero_grad()
                loss = objective()
                loss.backward()
                self.history.append(float(loss.detach()))
                return loss

            lbfgs.step(closure)
            used += int(lbfgs.state[lbfgs._params[0]].get("n_iter", 0))
        return z.detach().clamp(-Z_MAX, Z_MAX), used

    def _residuals(self, z: torch.Tensor, rows: torch.Tensor, y: torch.Tensor,
                   problem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled residuals (n,) and their Jacobian (n, p) in the free variables of the rows'
        problems; ``z`` is (P, p) over all problems."""
        self.evaluations += 1
        s = torch.sigmoid(z)
        theta = self.low + (self.high - self.low) * s
        leaf = theta[problem].detach().requires_grad_(True)
        with torch.enable_grad():
            price = self.f(rows, leaf).reshape(-1)
            (grad,) = torch.autograd.grad(price.sum(), leaf)  # row i depends on its own leaf row
        chain = ((self.high - self.low) * s * (1 - s))[problem]
        return (price.detach().to(self.dtype) - y) / self.scale, grad.to(self.dtype) * chain / self.scale

    def levenberg_marquardt(self, z: torch.Tensor, iterations: int, rtol: float = 1e-4
                            ) -> tuple[torch.Tensor, int]:
        """Batched Levenberg–Marquardt (Nielsen's damping update, Marquardt's scaling by the
        largest column norms seen, as MINPACK): returns the free variables and the steps taken."""
        k, p = z.shape[0], self.n_par
        n_prob = k * self.n_surf
        z = z.reshape(n_prob, p).clone()
        rows, y, problem = self._rows(k)
        r, jac = self._residuals(z, rows, y, problem)
        sse = torch.zeros(n_prob, dtype=self.dtype).index_add(0, problem, r * r)
        scale2 = torch.zeros(n_prob, p, dtype=self.dtype)  # D^2: largest diag(J^T J) seen
        mu = torch.full((n_prob,), math.nan, dtype=self.dtype)
        nu = torch.full((n_prob,), 2.0, dtype=self.dtype)
        active = torch.ones(n_prob, dtype=torch.bool)
        used = 0
        for _ in range(iterations):
            if not bool(active.any()):
                break
            used += 1
            act = active.nonzero().reshape(-1)
            sel = active[problem]
            prob_rows = problem[sel]
            j, rr = jac[sel], r[sel]
            jtj = torch.zeros(n_prob, p, p, dtype=self.dtype).index_add(
                0, prob_rows, j[:, :, None] * j[:, None, :])[act]
            grad = torch.zeros(n_prob, p, dtype=self.dtype).index_add(0, prob_rows, j * rr[:, None])[act]
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            scale2[act] = torch.maximum(scale2[act], diag)
            d2 = scale2[act] + 1e-12 * scale2[act].amax(dim=1, keepdim=True) + 1e-300
            m = mu[act]
            first = torch.isnan(m)
            m[first] = 1e-3
            mu[act] = m
            step = torch.linalg.solve(jtj + torch.diag_embed(m[:, None] * d2), -grad[:, :, None])[:, :, 0]
            # at most MAX_STEP in the free variables (sigmoid units): no leap onto a bound
            step = step * (MAX_STEP / step.abs().amax(dim=1, keepdim=True).clamp_min(MAX_STEP))
            predicted = -(step * grad).sum(dim=1) - 0.5 * torch.einsum("bi,bij,bj->b", step, jtj, step)
            trial = z.clone()
            trial[act] = (z[act] + step).clamp(-Z_MAX, Z_MAX)
            r_new, jac_new = self._residuals(trial, rows[sel], y[sel], prob_rows)
            sse_new = torch.zeros(n_prob, dtype=self.dtype).index_add(0, prob_rows, r_new * r_new)[act]
            sse_before = sse[act].clone()
            actual = 0.5 * (sse_before - sse_new)
            rho = actual / predicted.clamp_min(1e-300)
            better = torch.isfinite(sse_new) & (actual > 0)
            acc, rej = act[better], act[~better]
            gain = actual[better] / (0.5 * sse[acc]).clamp_min(1e-300)
            if len(acc):
                z[acc] = trial[acc]
                sse[acc] = sse_new[better]
                keep_new = better[torch.searchsorted(act, prob_rows)]  # rows of accepted problems
                rows_acc = sel.nonzero().reshape(-1)[keep_new]
                r[rows_acc], jac[rows_acc] = r_new[keep_new], jac_new[keep_new]
            factor = torch.clamp(1 - (2 * rho[better] - 1) ** 3, min=1 / 3)
            mu[acc] = mu[acc] * factor
            nu[acc] = 2.0
            mu[rej] = mu[rej] * nu[rej]
            nu[rej] = nu[rej] * 2
            done = torch.zeros(n_prob, dtype=torch.bool)
            done[acc[gain < rtol]] = True
            # the damped Gauss-Newton model expects (almost) nothing more: converged
            done[act[predicted < rtol * 0.5 * sse_before]] = True
            done[rej[mu[rej] > 1e12]] = True
            done[act[sse[act] < 1e-28 * self.count.repeat(k)[act]]] = True
            if used == PRUNE_AFTER and k > 1:  # from here on, each surface's best start only
                best = torch.argmin(sse.reshape(k, self.n_surf), dim=0)
                loser = torch.ones(k, self.n_surf, dtype=torch.bool)
                loser[best, torch.arange(self.n_surf)] = False
                done |= loser.reshape(-1)
            active &= ~done
            self.history.append(float(sse.sum()))
        self.final_mse = sse.reshape(k, self.n_surf) / self.count
        return z.reshape(k, self.n_surf, p), used

    def best(self, z: torch.Tensor, used: int, start_time: float) -> BatchFit:
        with torch.no_grad():
            theta = to_params(z, self.low, self.high)
            mse = self.final_mse if self.final_mse is not None else self.mse(theta)  # (k, S)
            keep = torch.argmin(torch.nan_to_num(mse, nan=math.inf), dim=0)
            surfaces = torch.arange(self.n_surf)
            params = theta[keep, surfaces]
            rmse = torch.sqrt(mse[keep, surfaces]) * self.scale
        start = self.origin[surfaces] if self.origin is not None else keep
        return BatchFit(params.double().numpy(), rmse.double().numpy(), used,
                        time.perf_counter() - start_time, start.numpy(), self.evaluations,
                        self.history)


ExactFunction = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``g(market, params) -> (prices, jacobian)``: one surface's ``market`` (n, k) at one parameter
vector ``params`` (p,): prices (n,) and their derivatives (n, p) in the parameters."""


def polish(exact_fn: ExactFunction, market: np.ndarray, quotes: np.ndarray,
           surface: Sequence[int] | np.ndarray, start: np.ndarray,
           bounds: Sequence[Sequence[float]] | np.ndarray, *, max_evaluations: int = 100,
           tol: float = 1e-12) -> PolishFit:
    """Refine each surface's ``start`` (S, p) with the exact pricer by
    ``scipy.optimize.least_squares`` (trust-region reflective inside ``bounds``, the exact
    Jacobian from ``exact_fn``).

    >>> fit = polish(g, x, y, surface_ids, batch.params, bounds)  # doctest: +SKIP
    """
    from scipy.optimize import least_squares

    b = check_bounds(bounds)
    market, quotes = np.asarray(market, dtype=np.float64), np.asarray(quotes, dtype=np.float64)
    idx = _surface_index(surface, len(quotes)).numpy()
    start = np.asarray(start, dtype=np.float64)
    n_surf = int(idx.max()) + 1
    if start.shape != (n_surf, b.shape[0]):
        raise ConfigError(f"start has shape {start.shape}; expected ({n_surf}, {b.shape[0]})")
    width = b[:, 1] - b[:, 0]
    out = PolishFit(np.empty_like(start), np.empty(n_surf), np.empty(n_surf),
                    np.zeros(n_surf, dtype=np.int64), np.empty(n_surf))
    for s in range(n_surf):
        t0 = time.perf_counter()
        rows = idx == s
        x, y = market[rows], quotes[rows]
        cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

        def evaluate(theta: np.ndarray, x=x, cache=cache) -> tuple[np.ndarray, np.ndarray]:
            key = theta.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = exact_fn(x, theta)
            return cache[key]

        theta0 = np.clip(start[s], b[:, 0] + 1e-9 * width, b[:, 1] - 1e-9 * width)
        r0 = evaluate(theta0)[0] - y
        res = least_squares(lambda th, y=y: evaluate(th)[0] - y, theta0,
                            jac=lambda th: evaluate(th)[1], bounds=(b[:, 0], b[:, 1]),
                            method="trf", x_scale="jac", xtol=tol, ftol=tol, gtol=tol,
                            max_nfev=max_evaluations)
        out.params[s] = res.x
        out.rmse[s] = math.sqrt(float(np.mean(res.fun**2)))
        out.rmse_start[s] = math.sqrt(float(np.mean(r0**2)))
        out.evaluations[s] = int(res.nfev)
        out.time_s[s] = time.perf_counter() - t0
    return out




# ----------------------------------------------------------------- a trained surrogate and quotes

# the names a surrogate's market inputs have in nnfin's finance datasets: a run with such an input
# needs it in the quotes (it is never calibrated as a parameter)
MARKET_INPUTS = ("moneyness", "tau", "r")
TARGETS = ("price", "iv")
SURFACE = "surface"
# kinds whose exact pricer --polish can use
EXACT_KINDS = ("heston", "black-scholes")


@dataclass
class Calibration:
    """What :func:`calibrate` found: ``fitted`` has one row per surface.

    ``fitted`` columns: ``surface``, one per parameter, ``rmse`` (target units), ``iterations``,
    ``time_s``; with ``polish`` the parameters, ``rmse``, ``iterations`` (exact-pricer calls) and
    ``time_s`` are the polished fit's, and ``network_<name>``, ``network_rmse`` (the network's
    own), ``network_rmse_exact`` (the exact pricer at the network's parameters),
    ``network_iterations`` and ``network_time_s`` the batched one's. Times per row are the
    batch's time divided by the number of surfaces (they are fitted together); the polish time
    is each surface's own.
    """

    fitted: pd.DataFrame
    parameters: list[str]
    market: list[str]
    target: str
    bounds: dict[str, tuple[float, float]]
    time_s: float                      # the batched network calibration, all surfaces
    polish_time_s: float | None = None  # the exact-pricer polish, all surfaces
    settings: dict[str, object] = field(default_factory=dict)


def run_kind(run: object) -> str | None:
    """The ``[data] kind`` a run was trained on (``None`` for a model folder without a config)."""
    data = getattr(getattr(run, "config", None), "data", None)
    return getattr(data, "kind", None)


def _where(run: object) -> str:
    folder = getattr(run, "dir", None)
    return f"run {str(folder)!r}" if folder is not None else "the run"


def check_surrogate(run: object) -> str:
    """The run's one target (``price`` or ``iv``), or a one-line error for any other run.

    >>> check_surrogate(type("Run", (), {"targets": ["price"], "features": ["tau", "sigma"]})())
    'price'
    >>> check_surrogate(type("Run", (), {"targets": ["sigma"], "features": ["price"]})())
    Traceback (most recent call last):
    ...
    nnfin.errors.ConfigError: the run predicts 'sigma', not an option price or implied vol: ...
    """
    targets = list(getattr(run, "targets", []) or [])
    if len(targets) != 1:
        raise ConfigError(f"{_where(run)} predicts {len(targets)} targets {targets!r}; calibrate needs "
                          "a price or implied-vol surrogate with one output ('price' or 'iv')")
    if targets[0] not in TARGETS and str(run_kind(run) or "").startswith("implied-vol"):
        raise ConfigError(f"{_where(run)} predicts {targets[0]!r} from an option's price: an "
                          "implied-vol solver network (the inverse map); calibrate needs a "
                          "surrogate that maps model parameters to the quoted value (target "
                          "'price' or 'iv')")
    if targets[0] not in TARGETS:
        raise ConfigError(f"{_where(run)} predicts {targets[0]!r}, not an option price or implied vol: "
                          "calibrate needs a price or implied-vol surrogate (target 'price' or 'iv')")
    return targets[0]


def training_ranges(run: object, stored: dict[str, tuple[float, float]] | None = None
                    ) -> dict[str, tuple[float, float]]:
    """The ranges of the run's inputs it was trained on: the generator's box for nnfin's
    finance kinds (``[data.options]`` ranges and overrides), else ``stored`` (the training rows'
    ``input_ranges`` in ``model.json``).
    """
    from nnfin.finance.datasets import SPECS, resolve_ranges

    kind = run_kind(run)
    features = list(getattr(run, "features", []))
    if kind in SPECS:
        options = getattr(run.config.data, "options", {}) or {}  # type: ignore[attr-defined]
        box, _ = resolve_ranges(kind, options.get("ranges", "wide"), options.get("overrides"))
        if all(f in box for f in features):
            return {f: (float(box[f][0]), float(box[f][1])) for f in features}
    if stored and all(f in stored for f in features):
        return {f: (float(stored[f][0]), float(stored[f][1])) for f in features}
    raise ConfigError(f"{_where(run)} has no stored training ranges for its inputs "
                      f"{', '.join(features)} (a finance kind's config, or input_ranges in "
                      "model.json, written by nnfin fit); calibrate keeps parameters inside them")


def _numeric_column(frame: pd.DataFrame, name: str, rows: pd.Index) -> np.ndarray:
    flags = frame[name].map(lambda v: isinstance(v, (bool, np.bool_)))
    if flags.any():
        i = int(np.flatnonzero(flags.to_numpy())[0])
        raise DataError(f"QUOTES row {rows[i]}, column {name!r}: {frame[name].iloc[i]!r} is true/false, "
                        "not a number")
    values = pd.to_numeric(frame[name], errors="coerce")
    bad = values.isna() & frame[name].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"QUOTES row {rows[i]}, column {name!r}: {frame[name].iloc[i]!r} is not a "
                        "number")
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise DataError(f"QUOTES row {rows[i]}, column {name!r}: missing or non-finite value "
                        f"({float(arr[i])})")
    return arr


@dataclass
class Quotes:
    """Checked quotes: market inputs (n, k), targets (n,), surface numbers and labels."""

    market: np.ndarray
    values: np.ndarray
    surface: np.ndarray
    labels: list[object]
    market_names: list[str]
    parameters: list[str]


def check_quotes(run: object, frame: pd.DataFrame, ranges: dict[str, tuple[float, float]]
                 ) -> Quotes:
    """Split ``frame`` into market inputs, target and surfaces, refusing bad input in one line
    (the row and column named): missing or extra columns, NaN, a market input outside the
    training ranges, a price outside the no-arbitrage bounds, an implied vol <= 0.

    Rows are numbered as in the file: row 0 is the first quote after the header.
    """
    target = check_surrogate(run)
    features = list(run.features)  # type: ignore[attr-defined]
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"quotes must be a DataFrame (or a CSV/Parquet file), got {type(frame).__name__}")
    if frame.empty:
        raise DataError("QUOTES holds no rows")
    columns = [str(c) for c in frame.columns]
    twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if twice is not None:
        raise DataError(f"QUOTES has two columns named {twice!r}; give every column its own name")
    allowed = [*features, target, SURFACE]
    for c in columns:
        if c not in allowed:
            raise DataError(f"QUOTES column {c!r} is neither a market input of the run "
                            f"({', '.join(f for f in features if f in columns) or 'none given'}), "
                            f"its target {target!r} nor {SURFACE!r}{did_you_mean(c, allowed)}; "
                            "remove it")
    if target not in columns:
        raise DataError(f"QUOTES lacks the target column {target!r} (the quoted "
                        f"{'prices' if target == 'price' else 'implied vols'}; columns: "
                        f"{', '.join(columns)})")
    for name in MARKET_INPUTS:
        if name in features and name not in columns:
            raise DataError(f"QUOTES lacks the market input column {name!r} (the run's inputs: "
                            f"{', '.join(features)}; a market input is never calibrated)")
    market = [f for f in features if f in columns]
    params = [f for f in features if f not in columns]
    if not market:
        raise DataError(f"QUOTES has none of the run's inputs {', '.join(features)}: give the "
                        "market inputs of every quote")
    if not params:
        raise DataError(f"QUOTES has every input of the run ({', '.join(features)}): nothing is left "
                        "to calibrate; leave out the model parameters")
    rows = frame.index if isinstance(frame.index, pd.RangeIndex) else pd.RangeIndex(len(frame))
    x = np.column_stack([_numeric_column(frame, c, rows) for c in market])
    y = _numeric_column(frame, target, rows)
    for j, name in enumerate(market):
        low, high = ranges[name]
        out = np.flatnonzero((x[:, j] < low) | (x[:, j] > high))
        if len(out):
            i = int(out[0])
            raise DataError(f"QUOTES row {rows[i]}, column {name!r}: {x[i, j]:g} is outside the "
                            f"surrogate's training range [{low:g}, {high:g}] of {name!r}")
    _check_no_arbitrage(run, target, x, y, market, rows)
    if SURFACE in columns:
        labels_col = frame[SURFACE]
        missing = labels_col.isna().to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DataError(f"QUOTES row {rows[i]}, column {SURFACE!r}: missing surface label")
        codes, labels = pd.factorize(labels_col, sort=False)
        labels = [v.item() if hasattr(v, "item") else v for v in labels]
    else:
        codes, labels = np.zeros(len(frame), dtype=np.int64), [0]
    counts = np.bincount(codes)
    few = np.flatnonzero(counts < len(params))
    if len(few):
        s = int(few[0])
        raise DataError(f"QUOTES column {SURFACE!r}: surface {labels[s]!r} has {counts[s]} quote(s) "
                        f"for {len(params)} parameters ({', '.join(params)}); give at least "
                        f"{len(params)}")
    return Quotes(x, y, np.asarray(codes, dtype=np.int64), list(labels), market, params)


def _check_no_arbitrage(run: object, target: str, x: np.ndarray, y: np.ndarray,
                        market: list[str], rows: pd.Index) -> None:
    """Prices in units of the strike (``V/K``, moneyness ``m = S0/K``): a call lies in
    ``[max(m - e^{-r tau}, 0), m]``, a put in ``[max(e^{-r tau} - m, 0), e^{-r tau}]``."""
    if target == "iv":
        bad = np.flatnonzero(y <= 0)
        if len(bad):
            i = int(bad[0])
            raise DataError(f"QUOTES row {rows[i]}, column 'iv': {y[i]:g} is not a volatility (> 0)")
        return
    if not {"moneyness", "tau"} <= set(market):
        return
    m, tau = x[:, market.index("moneyness")], x[:, market.index("tau")]
    r = x[:, market.index("r")] if "r" in market else np.zeros_like(m)
    disc = np.exp(-r * tau)
    data = getattr(getattr(run, "config", None), "data", None)
    option = (getattr(data, "options", {}) or {}).get("option", "call")
    tol = 1e-12
    if option == "put":
        low, high, what = np.maximum(disc - m, 0.0), disc, "a put"
        below, above = "its intrinsic value max(e^(-r tau) - moneyness, 0)", "the discounted strike"
    else:
        low, high, what = np.maximum(m - disc, 0.0), m, "a call"
        below, above = "its intrinsic value max(moneyness - e^(-r tau), 0)", "the spot (moneyness)"
    for bad, bound, name in ((y < low - tol, low, below), (y > high + tol, high, above)):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            side = "below" if bound is low else "above"
            raise DataError(f"QUOTES row {rows[i]}, column 'price': {y[i]:g} is {side} {name} "
                            f"= {bound[i]:g}: not a price of {what} without arbitrage")


def network_price_function(run: object, market: list[str], parameters: list[str]
                           ) -> PriceFunction:
    """``f(market, params)`` through the run's network in data units (scaling applied and
    undone), differentiable in ``params``; the network keeps its own dtype, ``f`` returns
    float64."""
    import copy

    features = list(run.features)  # type: ignore[attr-defined]
    net = copy.deepcopy(run.model).eval()  # type: ignore[attr-defined]  # the run's stays as it is
    for q in net.parameters():
        q.requires_grad_(False)  # gradients flow to the parameters to calibrate only
    p = next(net.parameters())
    scaler = run.scaler  # type: ignore[attr-defined]
    order = [(0, market.index(f)) if f in market else (1, parameters.index(f)) for f in features]
    if scaler is not None:
        x_mean, x_std = scaler.x_mean.double().cpu(), scaler.x_std.double().cpu()
        y_mean, y_std = float(scaler.y_mean.reshape(-1)[0]), float(scaler.y_std.reshape(-1)[0])
    else:
        x_mean = torch.zeros(len(features), dtype=torch.float64)
        x_std, y_mean, y_std = torch.ones_like(x_mean), 0.0, 1.0

    def f(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        cols = [(x if src == 0 else theta)[:, j] for src, j in order]
        xs = (torch.stack(cols, dim=1).to(torch.float64) - x_mean) / x_std
        out = net(xs.to(device=p.device, dtype=p.dtype))[:, 0]
        return out.to("cpu", torch.float64) * y_std + y_mean

    return f


def exact_price_function(run: object, market: list[str], parameters: list[str]) -> ExactFunction:
    """``g(market, params) -> (prices, d prices / d params)`` by the exact pricer of the run's
    kind: COS for ``heston`` (the run's ``N`` and ``L``), the closed form for ``black-scholes``."""
    kind = run_kind(run)
    if kind not in EXACT_KINDS:
        raise ConfigError(f"--polish needs the exact pricer of the run's kind ({', '.join(EXACT_KINDS)}); "
                          f"{_where(run)} was trained on kind {kind!r}, which has none")
    options = dict(getattr(run.config.data, "options", {}) or {})  # type: ignore[attr-defined]
    option = options.get("option", "call")
    features = list(run.features)  # type: ignore[attr-defined]

    def columns(x: np.ndarray, theta: np.ndarray) -> dict[str, torch.Tensor]:
        out = {f: torch.from_numpy(np.ascontiguousarray(x[:, market.index(f)])) for f in market}
        out.update({f: torch.full((len(x),), float(theta[parameters.index(f)]), dtype=torch.float64)
                    for f in parameters})
        return out

    if kind == "heston":
        from nnfin.finance.datasets import DEFAULT_L, DEFAULT_N
        from nnfin.finance.heston import heston_cos_sensitivities

        n_terms, big_l = int(options.get("N", DEFAULT_N)), float(options.get("L", DEFAULT_L))

        def g(x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = columns(x, theta)
            price, d = heston_cos_sensitivities(c["moneyness"], c["tau"], c["r"], rho=c["rho"],
                                                kappa=c["kappa"], vbar=c["vbar"], gamma=c["gamma"],
                                                v0=c["v0"], option=option, n_terms=n_terms,
                                                big_l=big_l)
            return price.numpy(), np.column_stack([d[p].numpy() for p in parameters])

        return g

    from nnfin.finance.black_scholes import bs_price

    def g_bs(x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = columns(x, theta)
        with torch.enable_grad():
            ins = {k: v.clone().requires_grad_(k in parameters) for k, v in c.items()}
            price = bs_price(ins["moneyness"], ins["tau"], ins["r"], ins["sigma"], option)
            grads = torch.autograd.grad(price.sum(), [ins[p] for p in parameters])
        return price.detach().numpy(), np.column_stack([gr.numpy() for gr in grads])

    if set(features) != {"moneyness", "tau", "r", "sigma"}:
        raise ConfigError(f"--polish: {_where(run)} has inputs {', '.join(features)}; the "
                          "Black–Scholes pricer takes moneyness, tau, r, sigma")
    return g_bs


def calibrate(run: object, frame: pd.DataFrame, *, polish: bool = False,
              ranges: dict[str, tuple[float, float]] | None = None,
              method: str = DEFAULTS["method"], iterations: int = DEFAULTS["iterations"],
              coarse: int = DEFAULTS["coarse"],
              candidates: int = DEFAULTS["candidates"], starts: int = DEFAULTS["starts"],
              adam_steps: int = DEFAULTS["adam_steps"], adam_lr: float = DEFAULTS["adam_lr"],
              lbfgs_steps: int = DEFAULTS["lbfgs_steps"], seed: int = DEFAULTS["seed"],
              polish_evaluations: int = 100) -> Calibration:
    """Calibrate the parameters of a trained surrogate to every surface of ``frame`` at once.

    ``frame`` holds the run's market inputs (the Heston recipe: ``moneyness``, ``tau``, ``r``),
    its target (``price`` or ``iv``) and optionally ``surface`` (many surfaces in one table); the
    run's inputs missing from it are the parameters (Heston: ``rho``, ``kappa``, ``vbar``,
    ``gamma``, ``v0``), found inside the training ranges (``ranges``: by default the run's, see
    :func:`training_ranges`). ``polish`` refines each surface with the kind's exact pricer.

    >>> run = nnfin.load_run("runs/heston")  # doctest: +SKIP
    >>> quotes = pd.read_csv("examples/finance/heston_quotes.csv")  # doctest: +SKIP
    >>> cal = nnfin.finance.calibrate(run, quotes)  # doctest: +SKIP
    >>> cal.fitted[["surface", "rho", "kappa", "vbar", "gamma", "v0", "rmse"]]  # doctest: +SKIP
    """
    check_surrogate(run)
    box = training_ranges(run) if ranges is None else {k: tuple(v) for k, v in ranges.items()}
    q = check_quotes(run, frame, box)  # type: ignore[arg-type]
    bounds = np.array([box[p] for p in q.parameters], dtype=np.float64)
    exact = exact_price_function(run, q.market_names, q.parameters) if polish else None
    f = network_price_function(run, q.market_names, q.parameters)
    batch = calibrate_surfaces(f, q.market, q.values, q.surface, bounds, method=method,
                               iterations=iterations, coarse=coarse, candidates=candidates,
                               starts=starts,
                               adam_steps=adam_steps, adam_lr=adam_lr, lbfgs_steps=lbfgs_steps,
                               seed=seed)
    n_surf = len(q.labels)
    table: dict[str, object] = {SURFACE: q.labels}
    cal = Calibration(pd.DataFrame(), q.parameters, q.market_names, run.targets[0],  # type: ignore[attr-defined]
                      {p: (float(lo), float(hi)) for p, (lo, hi) in zip(q.parameters, bounds, strict=True)},
                      batch.time_s,
                      settings={"method": method, "iterations": iterations, "coarse": coarse,
                                "candidates": candidates, "starts": starts, "adam_steps": adam_steps,
                                "adam_lr": adam_lr, "lbfgs_steps": lbfgs_steps, "seed": seed,
                                "polish": polish})
    if exact is None:
        table.update({p: batch.params[:, j] for j, p in enumerate(q.parameters)})
        table.update(rmse=batch.rmse, iterations=np.full(n_surf, batch.iterations),
                     time_s=np.full(n_surf, batch.time_s / n_surf))
    else:
        fine = polish_fit(exact, q, batch.params, bounds, polish_evaluations)
        cal.polish_time_s = float(fine.time_s.sum())
        table.update({p: fine.params[:, j] for j, p in enumerate(q.parameters)})
        table.update(rmse=fine.rmse, iterations=fine.evaluations, time_s=fine.time_s)
        table.update({f"network_{p}": batch.params[:, j] for j, p in enumerate(q.parameters)})
        table.update(network_rmse=batch.rmse, network_rmse_exact=fine.rmse_start,
                     network_iterations=np.full(n_surf, batch.iterations),
                     network_time_s=np.full(n_surf, batch.time_s / n_surf))
    cal.fitted = pd.DataFrame(table)
    return cal


def polish_fit(exact: ExactFunction, q: Quotes, start: np.ndarray, bounds: np.ndarray,
               max_evaluations: int) -> PolishFit:
    """:func:`polish` of checked quotes."""
    return polish(exact, q.market, q.values, q.surface, start, bounds,
                  max_evaluations=max_evaluations)


__all__ = ["DEFAULTS", "EXACT_KINDS", "MARKET_INPUTS", "BatchFit", "Calibration", "ExactFunction",
           "PolishFit", "PriceFunction", "Quotes", "calibrate", "calibrate_surfaces", "check_bounds",
           "check_quotes", "check_surrogate", "exact_price_function", "latin_hypercube",
           "network_price_function", "polish", "to_free", "to_params", "training_ranges"]
