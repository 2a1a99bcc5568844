"""Regression metrics in the data's own units (scikit-learn does the arithmetic).

>>> import numpy as np
>>> regression_metrics(np.array([[1.0], [2.0]]), np.array([[1.0], [2.5]]))["mae"]
0.25
"""

from __future__ import annotations

import math

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R^2 (averaged over outputs) and the max absolute error."""
    if len(y_true) == 0:
        return {}
    import sklearn  # here, not at import: scikit-learn and scipy take ~1 s to load
    from sklearn import metrics as skm

    # the arrays come from nnfin's own predictions: scikit-learn's per-call parameter
    # validation (about half of the time on a cross-validation fold) is skipped
    with sklearn.config_context(skip_parameter_validation=True):
        mse = float(skm.mean_squared_error(y_true, y_pred))
        r2 = float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else math.nan
        mae = float(skm.mean_absolute_error(y_true, y_pred))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": mae,
        "r2": r2,
        "max_abs_error": float(np.max(np.abs(y_true - y_pred))),
        "n": len(y_true),
    }
