"""The scikit-learn estimator: sklearn's own checks, pipelines, search, pickling, runs."""

from __future__ import annotations

import inspect
import pickle
from collections import Counter
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pandas as pd
import pytest
import tomli_w
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnfin
from nnfin.config import Config
from nnfin.errors import ConfigError
from nnfin.sklearn import NNRegressor, expected_failed_checks


@parametrize_with_checks(
    [NNRegressor(epochs=20, seed=0),
     NNRegressor("mlp-low", (4,), epochs=20, early_stopping=True, early_stopping_patience=3,
                 seed=0)],
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
    est = NNRegressor(epochs=300, seed=0).fit(x, y)
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
    est = NNRegressor(epochs=30, seed=0).fit(df, y)
    assert est.predict(df).shape == (120, 2)
    assert list(est.feature_names_in_) == ["S", "K"]
    assert est.predict(df[["S", "K"]].iloc[:5]).shape == (5, 2)
    assert np.asarray(NNRegressor(epochs=2, seed=0).fit(df, y[:, :1]).predict(df)).shape == (120, 1)


def test_seed_reproducible_and_global_rng_untouched(cos_data):
    x, y = cos_data
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = NNRegressor(epochs=5, seed=7).fit(x, y).predict(x)
    assert torch.equal(torch.get_rng_state(), before)
    b = NNRegressor(epochs=5, seed=7).fit(x, y).predict(x)
    np.testing.assert_array_equal(a, b)


def test_partial_fit_continues_exactly(cos_data):
    """fit(epochs=2) + two partial_fit calls == fit(epochs=4): weights, optimizer and batches."""
    x, y = cos_data
    full = NNRegressor(epochs=4, seed=1).fit(x, y)
    part = NNRegressor(epochs=2, seed=1).fit(x, y)
    part.partial_fit(x, y).partial_fit(x, y)
    np.testing.assert_array_equal(full.predict(x), part.predict(x))
    assert part.n_iter_ == 4
    assert list(part.history_["epoch"]) == [1, 2, 3, 4]
    assert list(part.history_["step"]) == list(full.history_["step"])


def test_partial_fit_from_scratch_and_checks(cos_data):
    x, y = cos_data
    est = NNRegressor(seed=0)
    for _ in range(3):
        est.partial_fit(x, y)
    assert est.n_iter_ == 3 and est.predict(x).shape == (240,)
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(np.c_[x, x], y)
    with pytest.raises(ConfigError, match="n_outputs_ = 1"):
        est.partial_fit(x, np.c_[y, y])


def test_early_stopping_holds_out_rows(cos_data):
    x, y = cos_data
    est = NNRegressor(epochs=400, lr=0.05, early_stopping=True, early_stopping_patience=2,
                      seed=0).fit(x, y)
    assert "val_loss" in est.history_
    assert est.n_iter_ < 400


def test_pipeline_grid_search_and_cross_val(cos_data):
    x, y = cos_data
    pipe = make_pipeline(StandardScaler(), NNRegressor(epochs=60, seed=0))
    assert pipe.fit(x, y).score(x, y) > 0.8
    grid = GridSearchCV(NNRegressor(epochs=40, seed=0),
                        {"neurons": [(4,), (6, 6)], "lr": [0.01, 0.05]}, cv=2)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"neurons", "lr"}
    scores = cross_val_score(NNRegressor(epochs=60, seed=0), x, y,
                             cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and scores.mean() > 0.5


def test_pickle_clone_params(cos_data):
    x, y = cos_data
    est = NNRegressor(neurons=(5,), epochs=10, seed=0).fit(x, y)
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
    ({"optim_patience": -1}, "NNRegressor: optim_patience = -1"),
    ({"early_stopping_patience": 0}, "NNRegressor: early_stopping_patience = 0"),
    ({"schedule": "cosin"}, "NNRegressor: schedule = 'cosin'"),
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


# ------------------------------------------------------------------ parameters = config keys

SECTIONS = ("model", "optim", "penalty", "train", "early_stopping")
RENAMED = {("optim", "name"): "optimizer", ("early_stopping", "enabled"): "early_stopping"}
OVERRIDE_ONLY = {("train", "derivative_weight"), ("train", "compile"), ("train", "threads"),
                 ("train", "distributed"), ("train", "tensorboard"), ("train", "tensorboard_every")}
ESTIMATOR_ONLY = {"validation_fraction", "overrides"}
# parameters whose default is not the config key's default
OWN_DEFAULTS = {"device": "cpu", "seed": None, "progress": False}


def schema_keys() -> list[tuple[str, str, Any]]:
    """(section, key, pydantic field) for every key of the sections the estimator sets, plus
    ``[data] scale`` (the one data key it has)."""
    out = [(section, key, field)
           for section in SECTIONS
           for key, field in Config.model_fields[section].annotation.model_fields.items()]
    return [*out, ("data", "scale", Config.model_fields["data"].annotation.model_fields["scale"])]


def parameter_name(section: str, key: str) -> str:
    """The documented rule: the key itself; a key in two of the sections gets its section as a
    prefix in both; [optim] name and [early_stopping] enabled have names of their own."""
    counts = Counter(k for s, k, _ in schema_keys() if s in SECTIONS)
    return RENAMED.get((section, key)) or (f"{section}_{key}" if counts[key] > 1 else key)


def other_value(key: str, field: Any) -> Any:
    """A valid value of the key that differs from its config default and the estimator's."""
    ann, default = field.annotation, field.get_default(call_default_factory=True)
    if key == "device":
        return "cuda:1"
    if key == "progress":
        return True
    if key == "threads":
        return 2
    if get_origin(ann) is Literal:
        return next(c for c in get_args(ann) if c != default)
    if ann is bool:
        return not default
    if key == "neurons":
        return [3]
    if key == "betas":
        return (0.5, 0.25)
    if int in {ann, *get_args(ann)}:
        return 3 if default is None else default + 1
    return 0.5 if not default else default / 2


def reached(est: NNRegressor, section: str, key: str) -> Any:
    cfg = est._config(est._seed(), n_train=1000)
    return getattr(getattr(cfg, section), key)


def test_the_parameter_names_follow_the_rule():
    assert parameter_name("optim", "patience") == "optim_patience"
    assert parameter_name("early_stopping", "patience") == "early_stopping_patience"
    assert parameter_name("optim", "lr") == "lr" and parameter_name("optim", "name") == "optimizer"


@pytest.mark.parametrize(("section", "key", "field"), schema_keys(),
                         ids=[f"{s}.{k}" for s, k, _ in schema_keys()])
def test_every_config_key_is_a_parameter_or_an_override(section, key, field):
    value = other_value(key, field)
    name = parameter_name(section, key)
    params = NNRegressor().get_params()
    if (section, key) in OVERRIDE_ONLY:
        assert name not in params
        text = tomli_w.dumps({"v": value}).partition("=")[2].strip()
        est = NNRegressor(overrides=[f"{section}.{key}={text}"])
    else:
        assert name in params, f"[{section}] {key} should be the parameter {name}"
        est = NNRegressor().set_params(**{name: value})
        assert est.get_params()[name] == value
    assert reached(est, section, key) == value


def test_every_parameter_sets_a_config_key_with_its_default():
    names = {parameter_name(s, k): (s, k, f) for s, k, f in schema_keys() if (s, k) not in OVERRIDE_ONLY}
    params = NNRegressor().get_params()
    assert set(params) - ESTIMATOR_ONLY == set(names), "a parameter that sets no config key"
    for name, (_, _, field) in names.items():
        default = field.get_default(call_default_factory=True)
        expected = OWN_DEFAULTS.get(name, tuple(default) if isinstance(default, list) else default)
        assert params[name] == expected, name


def test_the_docstring_names_every_parameter_with_its_config_key():
    lines = inspect.getdoc(NNRegressor).splitlines()
    starts = [i for i, line in enumerate(lines) if " : " in line and not line.startswith(" ")]
    documented = {lines[i].split(" : ")[0]: " ".join(lines[i + 1:j])  # name -> description
                  for i, j in zip(starts, [*starts[1:], lines.index("", starts[-1])], strict=True)}
    assert set(documented) == set(NNRegressor().get_params())
    for section, key, _ in schema_keys():
        if (section, key) in OVERRIDE_ONLY:
            assert f"``[{section}] {key}``" in documented["overrides"]
        else:
            assert f"``[{section}] {key}``" in documented[parameter_name(section, key)]


@pytest.mark.parametrize(("params", "check"), [
    ({"schedule": "cosine", "min_lr": 1e-4},
     lambda est: est.config_.optim.schedule == "cosine"
     and est.history_["lr"].iloc[-1] < 0.5 * est.history_["lr"].iloc[0]),
    ({"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
     lambda est: est.config_.optim.momentum == 0.9
     and est._optimizer_state["param_groups"][0]["momentum"] == 0.9
     and est._optimizer_state["param_groups"][0]["nesterov"] is True),
    ({"optimizer": "adamw", "weight_decay": 1e-4},
     lambda est: est.config_.optim.name == "adamw"
     and est._optimizer_state["param_groups"][0]["weight_decay"] == 1e-4),
    ({"l2": 1e-3, "include_bias": False, "loss": "huber", "huber_delta": 0.5},
     lambda est: (est.config_.penalty.l2, est.config_.penalty.include_bias,
                  est.config_.train.huber_delta) == (1e-3, False, 0.5)),
    ({"iterations": 7, "batch_size": 32},
     lambda est: est.config_.train.iterations == 7 and int(est.history_["step"].iloc[-1]) == 7),
    ({"overrides": ["train.derivative_weight=0.5"]},
     lambda est: est.config_.train.derivative_weight == 0.5),
])
def test_training_keys_reach_the_trained_config(cos_data, params, check):
    x, y = cos_data
    est = NNRegressor(epochs=6, seed=0, **params).fit(x, y)
    assert check(est)


def test_set_params_get_params_round_trip_and_grid_search(cos_data):
    values = {"schedule": "step", "step_size": 2, "gamma": 0.9, "optim_patience": 3,
              "early_stopping_patience": 4, "seed": 5, "overrides": ["train.compile=false"]}
    est = NNRegressor().set_params(**values)
    assert {k: est.get_params()[k] for k in values} == values
    assert clone(est).get_params() == est.get_params()
    assert NNRegressor(**est.get_params()).get_params() == est.get_params()
    x, y = cos_data
    grid = GridSearchCV(NNRegressor(epochs=4, seed=0),
                        {"schedule": ["none", "cosine"], "optimizer": ["sgd", "adamw"],
                         "weight_decay": [0.0, 1e-4]}, cv=2).fit(x, y)
    assert grid.best_estimator_.config_.optim.schedule == grid.best_params_["schedule"]
    assert grid.best_estimator_.config_.optim.weight_decay == grid.best_params_["weight_decay"]


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["optim.lr=0.1"], "is the parameter lr: set lr instead"),
    (["optim.patience=3"], "is the parameter optim_patience"),
    (["data.noise=0.1"], "sets [data]"),
    (["train.derivative_weight=-1"], "[train] derivative_weight = -1"),
    (["train.compilee=true"], "did you mean 'compile'"),
    (["lr"], "overrides item 'lr' must look like section.key=value"),
    ([3], "must be a list of"),
])
def test_bad_overrides_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        NNRegressor(overrides=overrides)._config(0, n_train=10)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("NNRegressor: ") and "NNRegressor: NNRegressor" not in str(info.value)
