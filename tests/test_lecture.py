"""The lecture's polynomial experiment, reproduced to the slide's 3 decimals."""

from pathlib import Path

import numpy as np
import pytest

import nnfin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lecture"


def test_polynomial_matches_the_results_slide():
    run = nnfin.fit(EXAMPLES / "polynomial.toml", write=False)
    poly = run.metrics["polynomial"]
    assert poly["formula"] == "y = 1.068 - 0.146x - 0.484x^2 + 0.102x^3"
    np.testing.assert_allclose(poly["coefficients"], [1.068, -0.146, -0.484, 0.102], atol=5e-4)
    # plain gradient descent with lr 1e-7 has not reached the least-squares optimum
    assert poly["relative_gap"] > 0.1


def test_least_squares_reference_is_numpys_polyfit():
    run = nnfin.fit(EXAMPLES / "polynomial.toml", overrides=["train.iterations=1"], write=False)
    x = np.linspace(-0.5 * np.pi, 1.5 * np.pi, 2000)
    expected = np.polynomial.polynomial.polyfit(x, np.cos(x), 3)
    np.testing.assert_allclose(run.metrics["polynomial"]["lstsq_coefficients"], expected, rtol=1e-9)
    sse = float(np.sum((np.polynomial.polynomial.polyval(x, expected) - np.cos(x)) ** 2))
    assert run.metrics["polynomial"]["lstsq_sse"] == pytest.approx(sse, rel=1e-9)


@pytest.mark.parametrize("overrides", [[], ["data.scale=true", "optim.lr=1"]])
def test_lbfgs_reaches_the_optimum(overrides):
    run = nnfin.fit(EXAMPLES / "polynomial_lbfgs.toml", overrides=overrides, write=False)
    assert 0 <= run.metrics["polynomial"]["relative_gap"] < 1e-6


@pytest.mark.parametrize("name", ["ann_high", "sgd_momentum", "rmsprop", "lbfgs", "adamw_onecycle"])
def test_lecture_network_configs_fit_cos(name):
    run = nnfin.fit(EXAMPLES / f"{name}.toml", write=False)
    assert run.metrics["status"] == "finished"
    assert run.metrics["test"]["r2"] > 0.999


def test_low_level_network_config_fits_cos():
    run = nnfin.fit(EXAMPLES / "ann_low.toml", overrides=["train.iterations=6000"], write=False)
    assert run.metrics["test"]["r2"] > 0.98
    assert [n for n, _ in run.model.named_parameters()][:2] == ["w1", "b1"]
