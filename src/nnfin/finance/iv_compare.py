"""Implied volatility three ways: a trained IV network, the vectorised Newton solver, and
:func:`scipy.optimize.brentq` per option — accuracy and time on the same options.

The default options are the setting of Table 8 in Liu, Oosterlee & Bohte (2019):
``n = 20,000`` calls with ``r = 0``, ``T = 0.5``, ``S0 = K = 1`` and volatilities drawn
uniformly from ``[0.01, 0.99]``; prices come from the Black–Scholes formula, so the true
implied volatility of every option is known and each method is scored against it.

These options are at the money forward (``S0 = K e^{-r T}``), exactly where the time value
``V - max(S0 - K e^{-r T}, 0)`` has a kink in ``S0`` (the put's slope on one side, the call's on
the other): an IV network fed the log time value sees a function that is not smooth there, and
its errors on these options are larger than its average over the training ranges.

Timing: the network's time includes building its inputs from the prices (the log time value
``log(V - max(S0 - K e^{-r tau}, 0))`` or the plain price), the data scaling and the forward
pass; the network and Newton take the best of ``repeats`` passes (after one untimed warm-up),
brentq one pass over the options (it takes seconds).

>>> frame = table8_options(n=5, seed=0)
>>> list(frame.columns)
['moneyness', 'tau', 'r', 'sigma', 'price', 'time_value', 'log_time_value']
>>> res = compare_iv_solvers(None, [], frame=frame, brentq=False)  # solvers only
>>> res["method"].tolist(), bool(res["mae"].max() < 1e-12)
(['newton (vectorised)'], True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from nnfin.finance.black_scholes import bs_intrinsic, bs_price
from nnfin.finance.implied_volatility import implied_vol, implied_vol_brentq

TABLE8 = {"moneyness": 1.0, "tau": 0.5, "r": 0.0, "sigma": (0.01, 0.99), "n": 20_000}
IV_INPUTS = ("moneyness", "tau", "r", "log_time_value", "price", "time_value")


def table8_options(n: int = TABLE8["n"], seed: int = 0, *, moneyness: float = TABLE8["moneyness"],
                   tau: float = TABLE8["tau"], r: float = TABLE8["r"],
                   sigma: tuple[float, float] = TABLE8["sigma"]) -> pd.DataFrame:
    """``n`` call options of the paper's Table 8 setting with their true volatility and prices."""
    rng = np.random.default_rng(seed)
    sig = rng.uniform(sigma[0], sigma[1], n)
    m, t, rr = (np.full(n, v, dtype=np.float64) for v in (moneyness, tau, r))
    price = bs_price(m, t, rr, sig).numpy()
    tv = price - bs_intrinsic(m, t, rr).numpy()
    return pd.DataFrame({"moneyness": m, "tau": t, "r": rr, "sigma": sig, "price": price,
                         "time_value": tv, "log_time_value": np.log(tv)})


def network_inputs(price: np.ndarray, m: np.ndarray, tau: np.ndarray, r: np.ndarray,
                   features: Sequence[str]) -> np.ndarray:
    """The IV network's input matrix, computed from market prices (part of the timed work).

    >>> network_inputs(np.array([0.1]), np.array([1.0]), np.array([1.0]), np.array([0.0]),
    ...                ["moneyness", "log_time_value"]).round(4).tolist()
    [[1.0, -2.3026]]
    """
    cols: dict[str, np.ndarray] = {"moneyness": m, "tau": tau, "r": r, "price": price}
    if "log_time_value" in features or "time_value" in features:
        tv = price - np.maximum(m - np.exp(-r * tau), 0.0)
        cols["time_value"] = tv
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["log_time_value"] = np.log(tv)
    missing = [f for f in features if f not in cols]
    if missing:
        raise ValueError(f"an IV network with inputs {missing!r} cannot be fed from prices "
                         f"(known inputs: {', '.join(IV_INPUTS)})")
    return np.column_stack([cols[f] for f in features])


def _best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up (allocations, first-call costs)
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _scores(true: np.ndarray, est: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(est)
    err = np.abs(est[ok] - true[ok])
    return {"mae": float(err.mean()) if ok.any() else math.nan,
            "rmse": float(np.sqrt((err**2).mean())) if ok.any() else math.nan,
            "max_abs_error": float(err.max()) if ok.any() else math.nan,
            "n_failed": int((~ok).sum())}


def compare_iv_solvers(predict: Callable[[np.ndarray], np.ndarray] | None, features: Sequence[str],
                       *, frame: pd.DataFrame | None = None, n: int = TABLE8["n"], seed: int = 0,
                       brentq: bool = True, repeats: int = 3) -> pd.DataFrame:
    """One row per method: ``method, n, time_s, us_per_option, speedup_vs_brentq, mae, rmse,
    max_abs_error, n_failed`` (errors against the true volatility).

    ``predict`` maps the network's inputs (n, len(features)) to volatilities, e.g.
    ``run.predict``; ``None`` leaves the network out.
    """
    frame = table8_options(n, seed) if frame is None else frame
    true = frame["sigma"].to_numpy()
    price, m, tau, r = (frame[c].to_numpy() for c in ("price", "moneyness", "tau", "r"))
    rows: list[dict[str, float | str | int]] = []
    if predict is not None:
        def net() -> np.ndarray:
            return np.asarray(predict(network_inputs(price, m, tau, r, features)))[:, 0]

        t, est = _best_time(net, repeats)
        rows.append({"method": "network", "time_s": t, **_scores(true, est)})
    tp, tm, ttau, tr = (torch.tensor(a, dtype=torch.float64) for a in (price, m, tau, r))
    t, est = _best_time(lambda: implied_vol(tp, tm, ttau, tr).numpy(), repeats)
    rows.append({"method": "newton (vectorised)", "time_s": t, **_scores(true, est)})
    if brentq:
        start = time.perf_counter()
        est = np.array([implied_vol_brentq(float(p), float(a), float(b), float(c))
                        for p, a, b, c in zip(price, m, tau, r, strict=True)])
        rows.append({"method": "brentq (per option)", "time_s": time.perf_counter() - start,
                     **_scores(true, est)})
    out = pd.DataFrame(rows)
    out.insert(1, "n", len(frame))
    out.insert(3, "us_per_option", out["time_s"] / len(frame) * 1e6)
    ref = out.loc[out["method"] == "brentq (per option)", "time_s"]
    out.insert(4, "speedup_vs_brentq", float(ref.iloc[0]) / out["time_s"] if len(ref) else math.nan)
    return out
