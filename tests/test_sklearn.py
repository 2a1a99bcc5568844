"""The scikit-learn estimator: sklearn's own checks, pipelines, search, pickling, runs."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnfin
from nnfin.errors import ConfigError
from nnfin.sklearn import NNRegressor, expected_failed_checks


@parametrize_with_checks(
    [NNRegressor(epochs=20, random_state=0),
     NNRegressor("mlp-low", (4,), epochs=20, early_stopping=True, patience=3, random_state=0)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def cos_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-np.pi / 2, 3 * np.pi / 2, 240).reshape(-1, 1)
    return x, np.cos(x).ravel()


def test_fit_predict_cos(cos_data):
    x, y = cos_data
    est = NNRegressor(epochs=300, random_state=0).fit(x, y)
    pred = est.predict(x)
    assert pred.shape == (240,) and pred.dtype == np.float64
    assert est.score(x, y) > 0.95
    assert est.n_iter_ == 300 and len(est.history_) == 300
    assert est.n_features_in_ == 1 and est.n_outputs_ == 1
    assert isinstance(est.model_, torch.nn.Module) and est.scaler_ is not None
    assert not hasattr(est, "feature_names_in_")


def test_multi_output_and_dataframe_names():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.uniform(-1, 1, (120, 2)), columns=["S", "K"])
    y = np.c_[df.S + df.K, df.S - df.K]
    est = NNRegressor(epochs=30, random_state=0).fit(df, y)
    assert est.predict(df).shape == (120, 2)
    assert list(est.feature_names_in_) == ["S", "K"]
    assert est.predict(df[["S", "K"]].iloc[:5]).shape == (5, 2)
    assert np.asarray(NNRegressor(epochs=2, random_state=0).fit(df, y[:, :1]).predict(df)).shape == (120, 1)


def test_random_state_reproducible_and_global_rng_untouched(cos_data):
    x, y = cos_data
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = NNRegressor(epochs=5, random_state=7).fit(x, y).predict(x)
    assert torch.equal(torch.get_rng_state(), before)
    b = NNRegressor(epochs=5, random_state=7).fit(x, y).predict(x)
    np.testing.assert_array_equal(a, b)


def test_partial_fit_continues_exactly(cos_data):
    """fit(epochs=2) + two partial_fit calls == fit(epochs=4): weights, optimizer and batches."""
    x, y = cos_data
    full = NNRegressor(epochs=4, random_state=1).fit(x, y)
    part = NNRegressor(epochs=2, random_state=1).fit(x, y)
    part.partial_fit(x, y).partial_fit(x, y)
    np.testing.assert_array_equal(full.predict(x), part.predict(x))
    assert part.n_iter_ == 4
    assert list(part.history_["epoch"]) == [1, 2, 3, 4]
    assert list(part.history_["step"]) == list(full.history_["step"])


def test_partial_fit_from_scratch_and_checks(cos_data):
    x, y = cos_data
    est = NNRegressor(random_state=0)
    for _ in range(3):
        est.partial_fit(x, y)
    assert est.n_iter_ == 3 and est.predict(x).shape == (240,)
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(np.c_[x, x], y)
    with pytest.raises(ConfigError, match="n_outputs_ = 1"):
        est.partial_fit(x, np.c_[y, y])


def test_early_stopping_holds_out_rows(cos_data):
    x, y = cos_data
    est = NNRegressor(epochs=400, lr=0.05, early_stopping=True, patience=2, random_state=0).fit(x, y)
    assert "val_loss" in est.history_
    assert est.n_iter_ < 400


def test_pipeline_grid_search_and_cross_val(cos_data):
    x, y = cos_data
    pipe = make_pipeline(StandardScaler(), NNRegressor(epochs=60, random_state=0))
    assert pipe.fit(x, y).score(x, y) > 0.8
    grid = GridSearchCV(NNRegressor(epochs=40, random_state=0),
                        {"neurons": [(4,), (6, 6)], "lr": [0.01, 0.05]}, cv=2)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"neurons", "lr"}
    scores = cross_val_score(NNRegressor(epochs=60, random_state=0), x, y,
                             cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and scores.mean() > 0.5


def test_pickle_clone_params(cos_data):
    x, y = cos_data
    est = NNRegressor(neurons=(5,), epochs=10, random_state=0).fit(x, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(est.predict(x), again.predict(x))
    fresh = clone(est)
    assert fresh.get_params() == est.get_params()
    assert not hasattr(fresh, "model_")
    with pytest.raises(NotFittedError):
        fresh.predict(x)
    assert fresh.set_params(lr=0.1, neurons=(3, 3)).get_params()["neurons"] == (3, 3)


@pytest.mark.parametrize(("params", "fragment"), [
    ({"lr": -1.0}, "NNRegressor: lr = -1.0"),
    ({"activation": "sigmod"}, "did you mean 'sigmoid'"),
    ({"neurons": (0,)}, "neurons = [0]"),
    ({"epochs": 0}, "epochs = 0"),
    ({"early_stopping": True, "validation_fraction": 1.5}, "validation_fraction = 1.5"),
    ({"optimizer": "sgd", "lr": 1e6}, "try a smaller lr"),
])
def test_bad_parameters_are_one_line_errors(params, fragment):
    x = np.linspace(0, 1, 20).reshape(-1, 1)
    with pytest.raises(ConfigError) as info:
        NNRegressor(**{"epochs": 5, **params}).fit(x, x.ravel())
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_from_run_predicts_like_the_run(tmp_path, fast):
    run = nnfin.fit(overrides=[*fast, f"run.dir={tmp_path / 'r'}", "model.neurons=[4]",
                               "run.plots=false"])
    est = NNRegressor.from_run(tmp_path / "r")
    x = np.linspace(-1, 4, 7).reshape(-1, 1)
    np.testing.assert_allclose(est.predict(x), run.predict(x).ravel())
    assert est.predict(x).shape == (7,)
    assert est.get_params()["neurons"] == (4,) and est.n_iter_ == 3
    assert clone(est).fit(x, np.cos(x).ravel()).n_iter_ == 3
