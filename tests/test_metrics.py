"""nnfin's regression metrics against scikit-learn's functions (the reference)."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from nnfin.metrics import regression_metrics


@pytest.mark.parametrize("shape", [(2, 1), (7, 1), (200, 1), (50, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_scikit_learns(shape, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=shape) * rng.uniform(0.1, 10, size=shape[1])
    p = y + rng.normal(size=shape) * rng.uniform(0.01, 2, size=shape[1])
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12, abs=1e-15)
    assert m["max_abs_error"] == pytest.approx(np.abs(y - p).max(), rel=1e-15)
    assert m["n"] == shape[0]


def test_constant_targets_score_as_scikit_learn():
    y = np.column_stack([np.ones(6), np.arange(6.0), np.full(6, 2.0)])
    p = y.copy()
    p[0, 0] = 1.5  # a constant output predicted wrongly: 0; predicted exactly: 1
    assert regression_metrics(y, p)["r2"] == pytest.approx(skm.r2_score(y, p))
    assert regression_metrics(y, y)["r2"] == skm.r2_score(y, y) == 1.0


def test_one_row_has_no_r2_and_no_rows_no_metrics():
    assert math.isnan(regression_metrics(np.array([[1.0]]), np.array([[2.0]]))["r2"])
    assert regression_metrics(np.empty((0, 1)), np.empty((0, 1))) == {}


def test_non_finite_predictions_give_non_finite_metrics():
    y = np.arange(4.0).reshape(-1, 1)
    p = y.copy()
    p[2] = np.nan
    m = regression_metrics(y, p)
    assert math.isnan(m["mse"]) and math.isnan(m["r2"]) and math.isnan(m["rmse"])
    p[2] = np.inf
    assert regression_metrics(y, p)["mse"] == math.inf
