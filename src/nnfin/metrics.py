"""Regression metrics in the data's own units, with scikit-learn's definitions.

MSE and MAE are averaged over every output; R^2 is each output's ``1 - SS_res / SS_tot``
averaged over outputs, and an output whose targets are constant scores 1 when predicted
exactly and 0 otherwise (``sklearn.metrics.r2_score``'s ``force_finite``). They are a few NumPy
reductions, computed here rather than through ``sklearn.metrics``: importing scikit-learn
(and SciPy with it) costs ~0.8 s, a sixth of a small ``nnfin fit``. The tests hold them to
scikit-learn's functions.

>>> import numpy as np
>>> regression_metrics(np.array([[1.0], [2.0]]), np.array([[1.0], [2.5]]))["mae"]
0.25
"""

from __future__ import annotations

import math

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R^2 (averaged over outputs) and the max absolute error; ``(n, outputs)``
    arrays (or ``(n,)``). Non-finite predictions give non-finite metrics."""
    if len(y_true) == 0:
        return {}
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    err = t - p
    with np.errstate(all="ignore"):
        mse = float(np.mean(np.square(err)))
        mae = float(np.mean(np.abs(err)))
        r2 = _r2(t, err) if len(t) > 1 else math.nan
        worst = float(np.max(np.abs(err)))
    return {"mse": mse, "rmse": math.sqrt(mse) if mse >= 0 else math.nan, "mae": mae, "r2": r2,
            "max_abs_error": worst, "n": len(t)}


def _r2(t: np.ndarray, err: np.ndarray) -> float:
    ss_res = np.sum(np.square(err), axis=0)
    ss_tot = np.sum(np.square(t - t.mean(axis=0)), axis=0)
    constant = ss_tot == 0
    # constant targets: 1 predicted exactly, 0 otherwise; non-finite predictions stay non-finite
    # there too (an infinite error -inf, NaN NaN), as on any other output
    per_output = np.where(constant, np.where(ss_res == 0, 1.0,
                                             np.where(np.isfinite(ss_res), 0.0, -ss_res)),
                          1.0 - ss_res / np.where(constant, 1.0, ss_tot))
    return float(np.mean(per_output))
