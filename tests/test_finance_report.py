"""The finance report: metrics (MAPE cutoff), surrogate Greeks through the scaler, IV solvers, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from conftest import assert_one_line_error
from nnfin.app import report as report_mod
from nnfin.app.report import evaluate, finance_metrics, fresh_test_sets, write_report
from nnfin.config import load_config
from nnfin.data.scaling import Standardizer
from nnfin.finance.black_scholes import bs_price
from nnfin.finance.iv_compare import compare_iv_solvers, network_inputs, table8_options
from nnfin.finance.surrogate import finite_difference_greeks, surrogate_greeks
from nnfin.metrics import regression_metrics
from nnfin.runs import Run

BS = ["data.kind=black-scholes", "data.n=400", "train.epochs=3", "train.batch_size=64",
      "train.progress=false", "train.device=cpu"]


# ----------------------------------------------------------------------------- metrics


def test_mape_counts_only_targets_above_the_cutoff():
    y = np.array([1.0, 2.0, 1e-4, 0.0])
    p = np.array([1.1, 2.0, 2e-4, 0.5])
    m = finance_metrics(y, p)  # default cutoff 1e-3: only the first two rows count
    assert m["n_mape"] == 2 and m["mape"] == pytest.approx(0.05)
    m0 = finance_metrics(y, p, mape_cutoff=0.0)  # |y| > 0: the 1e-4 row counts (error 100 %)
    assert m0["n_mape"] == 3 and m0["mape"] == pytest.approx((0.1 + 0.0 + 1.0) / 3)
    none = finance_metrics(np.array([1e-5, 0.0]), np.array([0.0, 0.0]))
    assert none["n_mape"] == 0 and math.isnan(none["mape"])


def test_other_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 1, 200)
    p = y + rng.normal(0, 0.01, 200)
    ours, ref = finance_metrics(y, p), regression_metrics(y[:, None], p[:, None])
    for key in ("mse", "rmse", "mae", "r2", "max_abs_error"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-12)


# ------------------------------------------------------------------- surrogate Greeks


@pytest.fixture(scope="module")
def smooth_run():
    """A tiny float64 tanh network on Black–Scholes prices (smooth, so differences converge)."""
    return nnfin.fit(overrides=[*BS, "train.dtype=float64", "model.activation=tanh",
                                "model.neurons=[16, 16]"], write=False)


def test_surrogate_greeks_match_finite_differences_of_predict(smooth_run):
    run = smooth_run
    x, _ = fresh_test_sets(run, n=64, seed=5)["test-narrow"]
    names = ["delta", "gamma", "vega", "theta", "rho"]
    auto = surrogate_greeks(run, x, names)
    fd1 = finite_difference_greeks(run.predict, x, run.features, ["delta", "vega", "theta", "rho"],
                                   h=1e-6)
    fd2 = finite_difference_greeks(run.predict, x, run.features, ["gamma"], h=1e-3)
    for name in ("delta", "vega", "theta", "rho"):
        np.testing.assert_allclose(auto[name], fd1[name], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(auto["gamma"], fd2["gamma"], rtol=1e-4, atol=1e-5)


def test_chain_rule_through_the_scaler_is_not_the_scaled_gradient(smooth_run):
    """dV/dm = y_std / x_std * dV_s/dx_s: the scaling factors really enter the Greeks."""
    run = smooth_run
    x = np.array([[1.0, 0.5, 0.05, 0.3]])
    s = run.scaler
    xs = s.transform_x(torch.tensor(x)).requires_grad_(True)
    net = run.model.double()
    (g,) = torch.autograd.grad(net(xs).sum(), xs)
    expected = float(g[0, 0] * s.y_std[0] / s.x_std[0])
    assert surrogate_greeks(run, x, ["delta"])["delta"][0] == pytest.approx(expected, rel=1e-10)
    assert float(s.y_std[0] / s.x_std[0]) != pytest.approx(1.0, abs=0.05)


def test_relu_gamma_is_zero_and_gamma_fd_is_reported():
    run = nnfin.fit(overrides=[*BS, "model.activation=relu", "model.neurons=[16, 16]"], write=False)
    rep = evaluate(run, n=200, train=False)
    quantities = set(rep.metrics["quantity"])
    assert {"price", "delta", "gamma", "vega", "theta", "rho", "gamma_fd"} <= quantities
    assert np.all(rep.samples["test-wide"]["gamma_nn"] == 0.0)
    assert any("piecewise linear" in note for note in rep.notes)


class ExactBlackScholes(nn.Module):
    """A 'network' that is the Black–Scholes formula in scaled units: its Greeks are exact."""

    def __init__(self, scaler: Standardizer) -> None:
        super().__init__()
        self.scaler = scaler
        self.dummy = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        x = xs * self.scaler.x_std + self.scaler.x_mean
        v = bs_price(x[:, 0], x[:, 1], x[:, 2], x[:, 3]).reshape(-1, 1)
        return self.scaler.transform_y(v) + 0 * self.dummy


def test_an_exact_surrogate_has_exact_greeks_in_the_report():
    scaler = Standardizer(torch.tensor([1.0, 0.6, 0.05, 0.5], dtype=torch.float64),
                          torch.tensor([0.3, 0.25, 0.02, 0.3], dtype=torch.float64),
                          torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.15], dtype=torch.float64))
    cfg = load_config(None, ["data.kind=black-scholes"])
    run = Run(cfg, ExactBlackScholes(scaler), scaler, ["moneyness", "tau", "r", "sigma"], ["price"])
    rep = evaluate(run, n=300, train=False)
    m = rep.metrics.set_index(["split", "quantity"])
    for split in ("test-wide", "test-narrow"):
        for q in ("price", "delta", "gamma", "vega", "theta", "rho"):
            assert m.loc[(split, q), "max_abs_error"] < 1e-7, (split, q)


# --------------------------------------------------------------------- test sets, IV


def test_test_sets_are_fresh_and_use_the_presets(smooth_run):
    sets = fresh_test_sets(smooth_run, n=100)
    assert set(sets) == {"test-wide", "test-narrow"}
    x_narrow = sets["test-narrow"][0]
    assert x_narrow[:, 0].min() >= 0.5 and x_narrow[:, 0].max() <= 1.5  # narrow moneyness
    assert not np.allclose(sets["test-wide"][0][:5], smooth_run.predict(sets["test-wide"][0][:5]))


def test_heston_has_only_a_wide_test_set():
    cfg = load_config(None, ["data.kind=heston", "data.options={N = 64, L = 12}"])
    run = Run(cfg, nn.Linear(8, 1).double(), None,
              ["moneyness", "tau", "r", "rho", "kappa", "vbar", "gamma", "v0"], ["price"])
    assert list(fresh_test_sets(run, n=20)) == ["test-wide"]


def test_iv_solver_comparison_scores_every_method():
    frame = table8_options(n=300, seed=1)
    assert frame["sigma"].between(0.01, 0.99).all() and (frame["r"] == 0).all()

    def perfect(x):  # an 'IV network' that inverts with the Newton solver
        price = np.exp(x[:, 3])  # r = 0, m = 1: intrinsic 0, so time value = price
        from nnfin.finance.implied_volatility import implied_vol

        return implied_vol(torch.tensor(price), x[:, 0], x[:, 1], x[:, 2]).numpy()[:, None]

    feats = ["moneyness", "tau", "r", "log_time_value"]
    res = compare_iv_solvers(perfect, feats, frame=frame, repeats=1).set_index("method")
    assert list(res.index) == ["network", "newton (vectorised)", "brentq (per option)"]
    assert (res["mae"] < 1e-10).all() and (res["n_failed"] == 0).all()
    assert res.loc["brentq (per option)", "speedup_vs_brentq"] == pytest.approx(1.0)
    x = network_inputs(frame["price"].to_numpy(), *(frame[c].to_numpy() for c in ("moneyness", "tau", "r")),
                       feats)
    np.testing.assert_allclose(x[:, 3], frame["log_time_value"], rtol=1e-12)


# ------------------------------------------------------------------------------- CLI


def test_report_command_writes_the_files(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(report_mod.DEFAULTS, "n", 300)  # the report written at the end of the fit
    run = nnfin.fit(overrides=[*BS, "model.neurons=[8]", f"run.dir={tmp_path / 'bs'}",
                               "run.plots=false"])
    assert (run.dir / "report" / "metrics.csv").exists()  # written by the fit
    assert not (run.dir / "report" / "greeks.png").exists()  # [run] plots = false
    for f in (run.dir / "report").iterdir():
        f.unlink()
    result = cli("report", str(run.dir), "--n", "300", "--seed", "7")
    assert result.code == 0, result
    assert "test-narrow" in result.out and "delta" in result.out
    files = {p.name for p in (run.dir / "report").iterdir()}
    assert files == {"metrics.csv", "report.json", "error_surface.png", "greeks.png", "hedging.csv",
                     "hedging.png"}
    table = pd.read_csv(run.dir / "report" / "metrics.csv")
    assert set(table["split"]) == {"train", "test-wide", "test-narrow"}
    assert list(table.columns)[2:] == ["mse", "rmse", "mae", "mape", "r2", "max_abs_error", "n", "n_mape"]
    summary = json.loads((run.dir / "report" / "report.json").read_text())
    assert summary["settings"]["seed_test_wide"] == 7 and summary["settings"]["mape_cutoff"] == 1e-3


def test_report_of_a_non_finance_run_is_one_line(tmp_path, cli, fast):
    nnfin.fit(overrides=[*fast, f"run.dir={tmp_path / 'cos'}"])
    assert_one_line_error(cli("report", str(tmp_path / "cos")), "kind = 'cos'", "finance report")


def test_report_of_a_missing_run_is_one_line(tmp_path, cli):
    assert_one_line_error(cli("report", str(tmp_path / "nope")), "does not exist")


def test_write_report_needs_a_folder(smooth_run):
    with pytest.raises(nnfin.errors.ConfigError, match="run folder"):
        write_report(smooth_run, n=10)
