"""nnfin.finance.greeks: a price surrogate's derivatives in every input, by autograd in data units.

Checked against central differences of ``run.predict`` (the same network: tight) and against the
Black–Scholes closed forms (a small network trained for seconds: loose).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from nnfin.config import load_config
from nnfin.errors import ConfigError, DataError
from nnfin.finance import bs_greeks, generate, greeks
from nnfin.finance.surrogate import surrogate_greeks
from nnfin.runs import Run

BS = ["data.kind=black-scholes", "data.n=3000", "data.split=[0.9, 0.1, 0.0]", "data.options.greeks=true",
      'data.derivatives={moneyness = "delta", tau = "-theta", r = "rho", sigma = "vega"}',
      "data.options.ranges=narrow", "train.derivative_weight=1.0", "train.dtype=float64",
      "model.activation=silu", "model.neurons=[32, 32]", "model.init=xavier", "train.epochs=100",
      "train.batch_size=256", "optim.lr=1e-2", "optim.schedule=cosine", "optim.min_lr=1e-5",
      "train.progress=false", "train.device=cpu"]
FEATURES = ["moneyness", "tau", "r", "sigma"]
NAMED = ["delta", "gamma", "vega", "theta", "rho"]


@pytest.fixture(scope="module")
def run():
    """A small smooth network trained on prices and Greeks for a few seconds."""
    return nnfin.fit(overrides=BS, write=False)


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    frame, _ = generate("black-scholes", n=400, seed=7, ranges="narrow")
    frame = frame[frame["sigma"] >= 0.1].reset_index(drop=True)
    return frame[FEATURES].assign(label=np.arange(len(frame)))  # an extra column is ignored


def central(predict, x: np.ndarray, i: int, j: int | None = None, h: float = 1e-3,
            scale: np.ndarray | None = None) -> np.ndarray:
    """Central differences of ``predict``: dV/dx_i (j None), or d2V/dx_i dx_j; the step of input
    k is ``h * scale[k]`` (``scale``: the inputs' spread, default 1)."""
    step = h * (np.ones(x.shape[1]) if scale is None else np.asarray(scale, dtype=np.float64))

    def shifted(*moves: tuple[int, float]) -> np.ndarray:
        y = x.copy()
        for k, sign in moves:
            y[:, k] += sign * step[k]
        return predict(y)[:, 0]

    if j is None:
        return (shifted((i, 1)) - shifted((i, -1))) / (2 * step[i])
    if i == j:
        return (shifted((i, 1)) - 2 * predict(x)[:, 0] + shifted((i, -1))) / step[i] ** 2
    return (shifted((i, 1), (j, 1)) - shifted((i, 1), (j, -1)) - shifted((i, -1), (j, 1))
            + shifted((i, -1), (j, -1))) / (4 * step[i] * step[j])


def test_columns_every_input_and_the_named_greeks(run, points):
    g = nnfin.finance.greeks(run, points.set_index(points.index + 100), cross=True)
    first = [f"d_price/d_{f}" for f in FEATURES]
    second = [f"d2_price/d_{f}2" for f in FEATURES]
    cross = [f"d2_price/d_{a}_d_{b}" for i, a in enumerate(FEATURES) for b in FEATURES[i + 1:]]
    assert list(g.columns) == [*first, *second, *cross, *NAMED]
    assert list(g.index) == list(points.index + 100) and np.isfinite(g.to_numpy()).all()
    np.testing.assert_array_equal(g["delta"], g["d_price/d_moneyness"])
    np.testing.assert_array_equal(g["theta"], -g["d_price/d_tau"])
    np.testing.assert_array_equal(g["gamma"], g["d2_price/d_moneyness2"])
    assert list(greeks(run, points).columns) == [*first, *second, *NAMED]  # no cross by default


def test_autograd_agrees_with_central_differences_of_predict(run, points):
    """The same network two ways: autograd through the scaling vs differences of run.predict."""
    g = greeks(run, points, cross=True)
    x = points[FEATURES].to_numpy()
    spread = x.std(axis=0)  # steps relative to each input's spread (r spans 0.05, tau 0.65)
    for i, f in enumerate(FEATURES):
        np.testing.assert_allclose(g[f"d_price/d_{f}"], central(run.predict, x, i, h=1e-5, scale=spread),
                                   rtol=1e-6, atol=1e-8, err_msg=f)
        np.testing.assert_allclose(g[f"d2_price/d_{f}2"], central(run.predict, x, i, i, scale=spread),
                                   rtol=1e-4, atol=1e-4, err_msg=f)
    for i, a in enumerate(FEATURES):
        for j in range(i + 1, len(FEATURES)):
            b = FEATURES[j]
            np.testing.assert_allclose(g[f"d2_price/d_{a}_d_{b}"],
                                       central(run.predict, x, i, j, scale=spread),
                                       rtol=1e-4, atol=1e-4, err_msg=f"{a}, {b}")


def test_the_report_greeks_are_the_same_numbers(run, points):
    g = greeks(run, points)
    ref = surrogate_greeks(run, points[FEATURES].to_numpy())
    for name in NAMED:
        np.testing.assert_allclose(g[name], ref[name], rtol=1e-12, atol=1e-14)


def test_a_small_trained_network_is_near_the_closed_forms(run, points):
    g = greeks(run, points)
    exact = {k: v.numpy() for k, v in bs_greeks(*(points[f].to_numpy() for f in FEATURES)).items()}
    # (Greek, R² above, MAE below); measured 0.996/0.013, 0.96/0.014, 0.987/0.006, 0.89/0.046, 0.91/0.14
    for name, r2_min, mae_max in (("delta", 0.99, 0.03), ("vega", 0.9, 0.03), ("theta", 0.95, 0.015),
                                  ("rho", 0.8, 0.08), ("gamma", 0.8, 0.25)):
        err = g[name].to_numpy() - exact[name]
        r2 = 1 - np.sum(err**2) / np.sum((exact[name] - exact[name].mean()) ** 2)
        assert r2 > r2_min and np.mean(np.abs(err)) < mae_max, (name, r2, np.mean(np.abs(err)))


def test_arrays_in_feature_order_and_tensors_work(run, points):
    x = points[FEATURES].to_numpy()
    a, t = greeks(run, x), greeks(run, torch.tensor(x))
    np.testing.assert_allclose(a.to_numpy(), greeks(run, points).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.to_numpy(), a.to_numpy(), rtol=1e-12)
    assert len(greeks(run, points.iloc[:0])) == 0
    chunked = greeks(run, points, chunk=7)
    np.testing.assert_allclose(chunked.to_numpy(), greeks(run, points).to_numpy(), rtol=1e-9, atol=1e-12)


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for frag in fragments:
        assert frag in text, (frag, text)


def test_a_missing_feature_is_named(run, points):
    with pytest.raises(DataError) as exc:
        greeks(run, points.drop(columns="sigma"))
    _one_line(exc, "'sigma'", "feature")


def test_non_finite_values_are_named_by_row_and_column(run, points):
    bad = points.copy()
    bad.loc[3, "tau"] = np.inf
    with pytest.raises(DataError) as exc:
        greeks(run, bad)
    _one_line(exc, "row 3", "'tau'", "inf")
    with pytest.raises(DataError) as exc:
        greeks(run, points[FEATURES].to_numpy()[:, :3])
    _one_line(exc, "shape", "moneyness, tau, r, sigma")
    with pytest.raises(DataError) as exc:
        greeks(run, points.assign(r="x"))
    _one_line(exc, "'r'", "not numeric")


def test_a_run_that_is_not_a_price_surrogate_is_refused():
    feats = ["moneyness", "tau", "r", "log_time_value"]
    iv = Run(load_config(None, ["data.kind=implied-vol"]), nn.Linear(4, 1).double(), None, feats,
             ["sigma"])
    with pytest.raises(ConfigError) as exc:
        greeks(iv, pd.DataFrame([[1.0, 0.5, 0.05, -3.0]], columns=feats))
    _one_line(exc, "'sigma'", "implied-vol", "not an option price")
    two = Run(load_config(None, ["data.kind=black-scholes"]), nn.Linear(4, 2).double(), None, FEATURES,
              ["price", "delta"])
    with pytest.raises(ConfigError) as exc:
        greeks(two, pd.DataFrame([[1.0, 0.5, 0.05, 0.2]], columns=FEATURES))
    _one_line(exc, "2 targets")


def test_heston_inputs_get_every_derivative_and_the_greeks_they_allow():
    feats = ["moneyness", "tau", "r", "rho", "kappa", "vbar", "gamma", "v0"]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    run = Run(load_config(None, ["data.kind=heston"]), net, None, feats, ["price"])
    x = pd.DataFrame(np.random.default_rng(0).uniform(0.1, 0.9, (5, 8)), columns=feats)
    g = greeks(run, x)
    assert "d_price/d_v0" in g and "d2_price/d_v0_2" not in g and "d2_price/d_v02" in g
    assert [c for c in g.columns if "/" not in c] == ["delta", "gamma", "theta", "rho"]  # no vega
    np.testing.assert_allclose(g["rho"], g["d_price/d_r"])  # rho is the rate's, not the correlation's
    np.testing.assert_allclose(g["d_price/d_v0"], central(run.predict, x.to_numpy(), 7, h=1e-6),
                               rtol=1e-7, atol=1e-10)


def test_a_network_linear_in_its_inputs_has_zero_second_derivatives():
    run = Run(load_config(None, ["data.kind=black-scholes"]), nn.Linear(4, 1).double(), None,
              FEATURES, ["price"])
    g = greeks(run, pd.DataFrame([[1.0, 0.5, 0.05, 0.2]] * 3, columns=FEATURES), cross=True)
    assert (g.filter(like="d2_") == 0).all().all() and (g["gamma"] == 0).all()
    np.testing.assert_allclose(g["d_price/d_sigma"], run.model.weight[0, 3].item())
