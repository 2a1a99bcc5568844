"""Differential training: derivative targets, their scaling, and the derivative loss."""

import numpy as np
import pytest
import torch

import nnfin
from nnfin.config import DataConfig, load_config
from nnfin.data import build_data
from nnfin.errors import ConfigError
from nnfin.models import build_model
from nnfin.train.loop import Trainer


def test_scaled_derivative_targets_match_finite_differences():
    data = build_data(DataConfig(kind="cos", n=500, derivatives={"x": "dydx"}), dtype="float64")
    s = data.scaler
    xs = data.scaled["x_train"][:, 0]
    h = 1e-6

    def f_scaled(z):  # y_s as a function of x_s, through the true cos
        return (torch.cos(z * s.x_std[0] + s.x_mean[0]) - s.y_mean[0]) / s.y_std[0]

    fd = (f_scaled(xs + h) - f_scaled(xs - h)) / (2 * h)
    torch.testing.assert_close(data.dydx["train"][:, 0], fd, rtol=1e-6, atol=1e-8)


def test_derivative_loss_equals_an_independent_computation():
    cfg = load_config(None, ["data.derivatives={x = \"dydx\"}", "train.dtype=float64",
                             "train.derivative_weight=0.7", "data.n=200", "train.device=cpu"])
    data = build_data(cfg.data, dtype="float64")
    torch.manual_seed(0)
    model = build_model(cfg.model, in_dim=1, out_dim=1).double()
    trainer = Trainer(model, data, cfg)
    xb, yb, db = data.scaled["x_train"][:32], data.scaled["y_train"][:32], data.dydx["train"][:32]
    objective, data_loss = trainer._objective(xb, yb, db)
    h = 1e-6
    with torch.no_grad():
        fd = (model(xb + h) - model(xb - h)) / (2 * h)  # central differences of the network
        expected = ((model(xb) - yb) ** 2).mean() + 0.7 * ((fd - db) ** 2).mean()
    assert float(objective.detach()) == pytest.approx(float(expected), rel=1e-8)
    assert float(data_loss) == pytest.approx(float(((model(xb) - yb) ** 2).mean()), rel=1e-12)


def test_differential_training_learns_the_derivative():
    common = ["train.epochs=60", "model.neurons=[16, 16]", "model.activation=tanh", "data.n=400",
              "train.device=cpu", "train.progress=false"]
    errors = []
    for deriv in ("{}", '{x = "dydx"}'):
        run = nnfin.fit(overrides=[*common, f"data.derivatives={deriv}"], write=False)
        x = torch.linspace(-1.4, 4.6, 300, dtype=torch.float64).reshape(-1, 1)
        model, s = run.model.double(), run.scaler
        xs = s.transform_x(x).requires_grad_(True)
        (g,) = torch.autograd.grad(s.inverse_y(model(xs)).sum(), xs)
        errors.append(float(((g / s.x_std)[:, 0] + torch.sin(x[:, 0])).abs().mean()))
    assert errors[1] < errors[0]


def test_black_scholes_greeks_as_derivative_columns():
    data = build_data(DataConfig(kind="black-scholes", n=300, options={"greeks": True},
                                 derivatives={"moneyness": "delta", "tau": "-theta"}))
    assert data.features == ["moneyness", "tau", "r", "sigma"]
    assert data.dydx_index == [0, 1] and data.dydx["train"].shape[1] == 2


@pytest.mark.parametrize(("deriv", "match"), [
    ({"z": "dydx"}, "derivatives"), ({"x": "slope"}, "dydx"),
])
def test_bad_derivative_mappings(deriv, match):
    with pytest.raises(ConfigError, match=match):
        build_data(DataConfig(kind="cos", n=50, derivatives=deriv))


def test_unknown_feature_in_derivatives():
    with pytest.raises(ConfigError, match="'S' is not an input feature"):
        build_data(DataConfig(kind="black-scholes", n=50, options={"greeks": True},
                              derivatives={"S": "delta"}))


def test_bs_derivatives_close_to_numpy_delta():
    """The delta column is dV/d(S0/K): check it against a finite difference of the price."""
    from nnfin.finance.black_scholes import bs_price

    data = build_data(DataConfig(kind="black-scholes", n=200, options={"greeks": True},
                                 derivatives={"moneyness": "delta"}, scale=False), dtype="float64")
    x = data.x_train
    h = 1e-6
    up = bs_price(x[:, 0] + h, x[:, 1], x[:, 2], x[:, 3])
    down = bs_price(x[:, 0] - h, x[:, 1], x[:, 2], x[:, 3])
    np.testing.assert_allclose(data.dydx["train"][:, 0].numpy(), ((up - down) / (2 * h)).numpy(),
                               rtol=1e-5, atol=1e-7)
