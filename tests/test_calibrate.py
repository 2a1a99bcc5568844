"""Calibration: batched fits against closed forms (Black–Scholes implied vols by scipy's brentq),
the bounds, the multi-start, the polish, a trained surrogate end to end, and bad quotes as one
line each through the command line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import nnfin
from conftest import assert_one_line_error
from nnfin.errors import ConfigError
from nnfin.finance.black_scholes import bs_price
from nnfin.finance.calibration import calibrate_surfaces, polish, to_free, to_params
from nnfin.finance.implied_volatility import implied_vol_brentq

GRID = [(m, tau) for m in (0.85, 0.95, 1.0, 1.05, 1.15) for tau in (0.4, 0.7, 0.95)]
METHODS = ("lm", "adam-lbfgs")


def bs_f(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Exact Black–Scholes calls: market inputs (moneyness, tau, r), parameter sigma."""
    return bs_price(x[:, 0], x[:, 1], x[:, 2], p[:, 0])


def surfaces(sigmas, rates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, quotes, idx = [], [], []
    for s, (sigma, r) in enumerate(zip(sigmas, rates, strict=True)):
        for m, tau in GRID:
            rows.append((m, tau, r))
            quotes.append(float(bs_price(m, tau, r, sigma)))
            idx.append(s)
    return np.array(rows), np.array(quotes), np.array(idx)


def brentq_vols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The implied vol of every quote by scipy's brentq (an independent reference)."""
    return np.array([implied_vol_brentq(float(v), float(m), float(tau), float(r))
                     for (m, tau, r), v in zip(x, y, strict=True)])


# ------------------------------------------------------------------------- the math


@pytest.mark.parametrize("method", METHODS)
def test_batched_calibration_recovers_every_surface_implied_vol(method):
    rng = np.random.default_rng(0)
    sigmas, rates = rng.uniform(0.05, 0.9, 25), rng.uniform(0.0, 0.08, 25)
    x, y, idx = surfaces(sigmas, rates)
    kw = {"iterations": 40} if method == "lm" else {"adam_steps": 200, "lbfgs_steps": 50}
    fit = calibrate_surfaces(bs_f, x, y, idx, [(0.01, 1.0)], method=method, **kw)
    iv = brentq_vols(x, y).reshape(25, len(GRID))
    assert np.allclose(iv, sigmas[:, None], atol=1e-9)  # the reference agrees with the truth
    assert np.allclose(fit.params[:, 0], iv.mean(axis=1), atol=1e-6)
    assert fit.rmse.max() < 1e-7 and fit.params.shape == (25, 1)


@pytest.mark.parametrize("method", METHODS)
def test_parameters_stay_inside_the_bounds(method):
    # two parameters (sigma, r) whose true values lie outside the box on either side
    def f(x, p):
        return bs_price(x[:, 0], x[:, 1], p[:, 1], p[:, 0])

    sig_true, r_true = [1.3, 0.004, 0.3], [0.09, 0.0, 0.05]
    x, y, idx = surfaces(sig_true, r_true)
    bounds = [(0.01, 1.0), (0.01, 0.06)]
    fit = calibrate_surfaces(f, x[:, :2], y, idx, bounds, method=method)
    low, high = np.array(bounds).T
    assert (fit.params > low).all() and (fit.params < high).all()
    assert fit.params[0, 0] > 0.99 and fit.params[0, 1] > 0.059  # pushed to the upper bounds
    assert fit.params[1, 0] < 0.02 and fit.params[1, 1] < 0.011  # and to the lower ones
    assert abs(fit.params[2, 0] - 0.3) < 1e-6 and abs(fit.params[2, 1] - 0.05) < 1e-5


def test_reparametrisation_round_trips_and_never_reaches_a_bound():
    low, high = torch.tensor([-0.95, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)
    theta = torch.tensor([[-0.5, 1.3], [-0.95, 2.0]], dtype=torch.float64)
    back = to_params(to_free(theta, low, high), low, high)
    assert torch.allclose(back[0], theta[0]) and (back[1] > low).all() and (back[1] < high).all()


def test_multi_start_keeps_the_best_start_per_surface():
    # g(p) = (sin 6p, p/5): sin 6p alone matches at several p, the second quote tells them apart;
    # a single start from the wrong basin stays in a local minimum
    def f(x, p):
        return torch.where(x[:, 0] == 0, torch.sin(6 * p[:, 0]), p[:, 0] / 5)

    truth = np.array([0.15, 0.9, 1.7])
    x = np.array([[0.0], [1.0]] * 3)
    y = np.array([v for t in truth for v in (math.sin(6 * t), t / 5)])
    idx = np.repeat(np.arange(3), 2)
    many = calibrate_surfaces(f, x, y, idx, [(0.0, 2.0)], candidates=16, starts=16, iterations=60)
    assert np.allclose(many.params[:, 0], truth, atol=1e-6)
    assert len(set(many.best_start.tolist())) > 1  # different starts won on different surfaces


def test_polish_reaches_the_exact_parameters_from_a_rough_start():
    sigmas = np.array([0.12, 0.33, 0.71])
    x, y, idx = surfaces(sigmas, [0.01, 0.03, 0.05])

    def exact(xs: np.ndarray, theta: np.ndarray):
        s = torch.tensor([float(theta[0])] * len(xs), dtype=torch.float64, requires_grad=True)
        price = bs_price(torch.tensor(xs[:, 0]), torch.tensor(xs[:, 1]), torch.tensor(xs[:, 2]), s)
        (grad,) = torch.autograd.grad(price.sum(), s)
        return price.detach().numpy(), grad.numpy()[:, None]

    fine = polish(exact, x, y, idx, (sigmas * 1.2)[:, None], [(0.01, 1.0)])
    assert np.allclose(fine.params[:, 0], sigmas, atol=1e-10)
    assert fine.rmse.max() < 1e-12 < fine.rmse_start.min()


def test_bad_settings_are_one_line_errors():
    x, y, idx = surfaces([0.2], [0.01])
    with pytest.raises(ConfigError, match="method = 'newton'"):
        calibrate_surfaces(bs_f, x, y, idx, [(0.01, 1.0)], method="newton")
    with pytest.raises(ConfigError, match=r"bounds\[0\]"):
        calibrate_surfaces(bs_f, x, y, idx, [(1.0, 0.01)])
    with pytest.raises(ConfigError, match="starts = 0"):
        calibrate_surfaces(bs_f, x, y, idx, [(0.01, 1.0)], starts=0)


# ------------------------------------------------------- a trained surrogate, end to end

BS_RUN = ["data.kind=black-scholes", "data.n=3000",
          "data.options.overrides={moneyness = [0.8, 1.2], tau = [0.3, 1.0], r = [0.0, 0.05], "
          "sigma = [0.1, 0.5]}",
          "data.options.greeks=true",
          'data.derivatives={moneyness = "delta", tau = "-theta", r = "rho", sigma = "vega"}',
          "data.split=[0.9, 0.1, 0.0]", "model.neurons=[32, 32]", "model.activation=silu",
          "model.init=xavier", "optim.lr=0.01", "optim.schedule=cosine", "optim.min_lr=1e-4",
          "train.epochs=40", "train.batch_size=128", "train.progress=false", "train.device=cpu",
          "run.plots=false"]
SIGMAS = (0.15, 0.22, 0.3, 0.38, 0.45)


@pytest.fixture(scope="module")
def bs_run(tmp_path_factory):
    """A small Black–Scholes surrogate (sigma in [0.1, 0.5]) trained in seconds, in a run folder."""
    folder = tmp_path_factory.mktemp("calibrate") / "bs"
    return nnfin.fit(overrides=[*BS_RUN, f"run.dir={folder}"])


def quotes_frame(sigmas=SIGMAS, rates=None) -> pd.DataFrame:
    rates = rates or [0.01 + 0.008 * i for i in range(len(sigmas))]
    x, y, idx = surfaces(sigmas, rates)
    return pd.DataFrame({"surface": [f"S{i}" for i in idx], "moneyness": x[:, 0], "tau": x[:, 1],
                         "r": x[:, 2], "price": y})


def test_cli_recovers_implied_vols_through_the_surrogate(bs_run, cli, tmp_path):
    quotes = quotes_frame()
    quotes.to_csv(tmp_path / "quotes.csv", index=False)
    out = tmp_path / "fitted.csv"
    result = cli("calibrate", str(bs_run.dir), str(tmp_path / "quotes.csv"), "-o", str(out))
    assert result.code == 0, result
    assert "calibrated 5 surface(s): sigma from moneyness, tau, r -> price" in result.out
    fitted = pd.read_csv(out)
    assert list(fitted.columns) == ["surface", "sigma", "rmse", "iterations", "time_s"]
    assert fitted["surface"].tolist() == [f"S{i}" for i in range(5)]
    x = quotes[["moneyness", "tau", "r"]].to_numpy()
    iv = brentq_vols(x, quotes["price"].to_numpy()).reshape(5, -1).mean(axis=1)
    assert np.abs(fitted["sigma"].to_numpy() - iv).max() < 0.02  # the network's accuracy
    assert fitted["rmse"].max() < 5e-3
    # --polish: the exact Black–Scholes price from the network's answer
    again = cli("calibrate", str(bs_run.dir), str(tmp_path / "quotes.csv"), "-o", str(out),
                "--polish")
    assert_one_line_error(again, "exists")  # FITTED is never replaced without --force
    polished = cli("calibrate", str(bs_run.dir), str(tmp_path / "quotes.csv"), "-o", str(out),
                   "--polish", "--force")
    assert polished.code == 0, polished
    fitted = pd.read_csv(out)
    assert np.abs(fitted["sigma"].to_numpy() - iv).max() < 1e-8
    assert fitted["rmse"].max() < 1e-10
    assert np.allclose(fitted["network_sigma"], fitted["sigma"], atol=0.02)
    assert {"network_rmse", "network_rmse_exact", "network_time_s"} <= set(fitted.columns)


def test_python_api_matches_the_command_line_shape(bs_run):
    cal = nnfin.finance.calibrate(bs_run, quotes_frame().drop(columns="surface"))
    assert cal.parameters == ["sigma"] and cal.market == ["moneyness", "tau", "r"]
    assert len(cal.fitted) == 1 and cal.fitted["surface"].tolist() == [0]
    assert cal.bounds == {"sigma": (0.1, 0.5)}
    assert 0.1 < cal.fitted["sigma"].iloc[0] < 0.5


def _bad(frame: pd.DataFrame, edit) -> pd.DataFrame:
    out = frame.copy()
    edit(out)
    return out


BAD_QUOTES = [
    ("extra column", lambda f: f.insert(1, "strike", 1.0), ["'strike'", "neither a market input"]),
    ("missing target", lambda f: f.pop("price"), ["'price'", "lacks"]),
    ("missing market input", lambda f: f.pop("r"), ["'r'", "market input"]),
    ("NaN", lambda f: f.__setitem__("tau", f["tau"].where(f.index != 3)), ["row 3", "'tau'"]),
    ("text", lambda f: f.__setitem__("r", f["r"].astype(object).where(f.index != 5, "abc")),
     ["row 5", "'r'", "'abc'"]),
    ("below intrinsic", lambda f: f.loc.__setitem__((7, "price"), 1e-6), ["row 7", "'price'", "intrinsic"]),
    ("above the spot", lambda f: f.loc.__setitem__((2, "price"), 5.0), ["row 2", "above the spot"]),
    ("outside the range", lambda f: f.loc.__setitem__((4, "tau"), 2.0),
     ["row 4", "'tau'", "training range [0.3, 1]"]),
    ("missing surface", lambda f: f.__setitem__("surface", f["surface"].where(f.index != 6)),
     ["row 6", "'surface'"]),
    ("every input given", lambda f: f.insert(1, "sigma", 0.2), ["nothing is left to calibrate"]),
]


@pytest.mark.parametrize(("name", "edit", "fragments"), BAD_QUOTES, ids=[b[0] for b in BAD_QUOTES])
def test_bad_quotes_are_one_line_naming_row_and_column(bs_run, cli, tmp_path, name, edit, fragments):
    path = tmp_path / "quotes.csv"
    _bad(quotes_frame(), edit).to_csv(path, index=False)
    out = tmp_path / "fitted.csv"
    result = cli("calibrate", str(bs_run.dir), str(path), "-o", str(out))
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_runs_that_are_not_price_surrogates_are_refused(cli, tmp_path):
    iv = nnfin.fit(overrides=["data.kind=implied-vol", "data.n=300", "train.epochs=1",
                              "model.neurons=[4]", "train.progress=false", "run.plots=false",
                              f"run.dir={tmp_path / 'iv'}"])
    quotes = tmp_path / "q.csv"
    quotes_frame().to_csv(quotes, index=False)
    result = cli("calibrate", str(iv.dir), str(quotes), "-o", str(tmp_path / "f.csv"))
    assert_one_line_error(result, "predicts 'sigma'", "implied-vol solver network", "'price' or 'iv'")
    missing = cli("calibrate", str(tmp_path / "nope"), str(quotes), "-o", str(tmp_path / "f.csv"))
    assert_one_line_error(missing, "nope")


def test_a_surrogate_trained_on_a_file_calibrates_inside_its_stored_input_ranges(tmp_path, cli):
    from nnfin.finance.datasets import generate

    frame, _ = generate("black-scholes", n=600, seed=1, overrides={"sigma": (0.1, 0.5), "r": (0.0, 0.05)})
    frame.to_csv(tmp_path / "bs.csv", index=False)
    run = nnfin.fit(overrides=["data.kind=file", f"data.path={tmp_path / 'bs.csv'}",
                               'data.features=["moneyness", "tau", "r", "sigma"]',
                               "data.target=price", "train.epochs=2", "model.neurons=[8]",
                               "train.progress=false", "run.plots=false",
                               f"run.dir={tmp_path / 'run'}"])
    spec = __import__("json").loads((run.dir / "model.json").read_text())
    low, high = spec["input_ranges"]["sigma"]
    # the training rows' extremes (float32 data: to its rounding), inside the sampled [0.1, 0.5]
    assert 0.1 - 1e-7 <= low < 0.11 and 0.49 < high <= 0.5 + 1e-7
    cal = nnfin.calibrate(run.dir, quotes_frame(), out=tmp_path / "fitted.parquet")
    assert ((cal.fitted["sigma"] > low) & (cal.fitted["sigma"] < high)).all()
    assert pd.read_parquet(tmp_path / "fitted.parquet").shape == cal.fitted.shape
    # a file-trained run has no exact pricer to polish with
    result = cli("calibrate", str(run.dir), str(tmp_path / "q.csv"), "-o", str(tmp_path / "f.csv"),
                 "--polish")
    assert_one_line_error(result, "q.csv")  # the quotes file is checked first: it is missing
    quotes_frame().to_csv(tmp_path / "q.csv", index=False)
    result = cli("calibrate", str(run.dir), str(tmp_path / "q.csv"), "-o", str(tmp_path / "f.csv"),
                 "--polish")
    assert_one_line_error(result, "--polish needs the exact pricer", "'file'")


def test_in_memory_quotes_with_a_repeated_column_or_no_rows_are_refused(bs_run):
    from nnfin.errors import DataError

    twice = quotes_frame()
    twice.columns = ["surface", "moneyness", "tau", "tau", "price"]
    with pytest.raises(DataError, match="two columns named 'tau'"):
        nnfin.finance.calibrate(bs_run, twice)
    with pytest.raises(DataError, match="no rows"):
        nnfin.finance.calibrate(bs_run, quotes_frame().iloc[:0])


# ------------------------------------------------------------------------------ Heston


def heston_stub(**options):
    """A duck-typed run of the heston kind: what the exact pricer needs (config, features)."""
    from types import SimpleNamespace

    from nnfin.finance.datasets import FEATURES

    data = SimpleNamespace(kind="heston", options={"N": 256, "L": 12, **options})
    return SimpleNamespace(config=SimpleNamespace(data=data), features=FEATURES["heston"],
                           targets=["price"], dir=None)


HESTON_TRUE = np.array([[-0.7, 1.2, 0.09, 0.4, 0.16], [-0.3, 0.6, 0.2, 0.25, 0.08]])
HESTON_BOUNDS = [(-0.95, 0.0), (0.0, 2.0), (0.0, 0.5), (0.0, 0.5), (0.05, 0.5)]


def heston_quotes(n_terms: int = 256, big_l: float = 12.0):
    from nnfin.finance.heston import heston_cos_price

    grid = [(1 / k, tau) for tau in (0.25, 0.5, 1.0, 1.25) for k in (0.8, 0.9, 1.0, 1.1, 1.2)]
    x = np.array([(m, tau, 0.03) for _ in HESTON_TRUE for m, tau in grid])
    idx = np.repeat(np.arange(len(HESTON_TRUE)), len(grid))
    p = HESTON_TRUE[idx]
    y = heston_cos_price(x[:, 0], x[:, 1], x[:, 2], rho=p[:, 0], kappa=p[:, 1], vbar=p[:, 2],
                         gamma=p[:, 3], v0=p[:, 4], n_terms=n_terms, big_l=big_l).numpy()
    return x, y, idx


def test_batched_heston_calibration_through_the_exact_cos_price_recovers_the_parameters():
    from nnfin.finance.heston import _cos_put

    def cos_f(x, p):  # differentiable COS call prices (the pricer's own sum, without detaching)
        put = _cos_put(x[:, 0], x[:, 1], x[:, 2], *p.T, n_terms=256, big_l=12.0)
        return put + x[:, 0] - torch.exp(-x[:, 1] * x[:, 2])

    x, y, idx = heston_quotes()
    fit = calibrate_surfaces(cos_f, x, y, idx, HESTON_BOUNDS, iterations=40)
    assert fit.rmse.max() < 1e-7
    assert np.allclose(fit.params, HESTON_TRUE, atol=2e-3)  # rho and gamma: the weakest two


def test_polish_with_the_exact_heston_pricer_of_a_run():
    from nnfin.finance.calibration import exact_price_function

    x, y, idx = heston_quotes()
    exact = exact_price_function(heston_stub(), ["moneyness", "tau", "r"],
                                 ["rho", "kappa", "vbar", "gamma", "v0"])
    rough = HESTON_TRUE * np.array([0.9, 1.1, 1.05, 0.9, 1.02])
    fine = polish(exact, x, y, idx, rough, HESTON_BOUNDS)
    assert fine.rmse.max() < 1e-10 and fine.rmse_start.min() > 1e-4
    assert np.allclose(fine.params, HESTON_TRUE, atol=1e-6)


# ------------------------------------------------------------ an implied-vol surrogate


def test_an_implied_vol_surrogate_calibrates_its_smile_parameters(tmp_path, cli):
    """A network of iv = level + curve * log(moneyness)^2 (parameters level, curve) trained on
    a file; quotes of iv recover the parameters, and an iv <= 0 is refused."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"moneyness": rng.uniform(0.8, 1.2, n), "tau": rng.uniform(0.2, 1.0, n),
                          "level": rng.uniform(0.1, 0.4, n), "curve": rng.uniform(0.0, 2.0, n)})
    frame["iv"] = frame["level"] + frame["curve"] * np.log(frame["moneyness"]) ** 2
    frame.to_csv(tmp_path / "smile.csv", index=False)
    run = nnfin.fit(overrides=["data.kind=file", f"data.path={tmp_path / 'smile.csv'}",
                               "data.target=iv", "model.neurons=[32, 32]", "model.activation=silu",
                               "optim.lr=0.01", "optim.schedule=cosine", "train.epochs=60",
                               "train.batch_size=128", "train.progress=false", "run.plots=false",
                               f"run.dir={tmp_path / 'run'}"])
    m = np.tile([0.85, 0.95, 1.0, 1.05, 1.15], 2)
    quotes = pd.DataFrame({"surface": ["x"] * 5 + ["y"] * 5, "moneyness": m, "tau": 0.5,
                           "iv": np.r_[0.2 + 1.5 * np.log(m[:5]) ** 2, 0.3 + 0.5 * np.log(m[5:]) ** 2]})
    cal = nnfin.calibrate(run.dir, quotes)
    assert cal.parameters == ["level", "curve"] and cal.target == "iv"
    assert np.allclose(cal.fitted["level"], [0.2, 0.3], atol=0.01)
    assert cal.fitted["rmse"].max() < 0.01
    quotes.loc[3, "iv"] = -0.1
    quotes.to_csv(tmp_path / "q.csv", index=False)
    result = cli("calibrate", str(run.dir), str(tmp_path / "q.csv"), "-o", str(tmp_path / "f.csv"))
    assert_one_line_error(result, "row 3", "'iv'", "not a volatility")


def test_quote_values_true_false_and_nan_are_named_plainly():
    import pandas as pd

    from nnfin.errors import DataError
    from nnfin.finance.calibration import _numeric_column

    rows = pd.RangeIndex(3)
    with pytest.raises(DataError, match=r"row 1, column 'price': True is true/false"):
        _numeric_column(pd.DataFrame({"price": [0.1, True, 0.2]}, dtype=object), "price", rows)
    with pytest.raises(DataError, match=r"row 2, column 'price': missing or non-finite value \(nan\)"):
        _numeric_column(pd.DataFrame({"price": [0.1, 0.3, float("nan")]}), "price", rows)


def test_an_implied_vol_solver_network_is_refused_for_what_it_is():
    from types import SimpleNamespace

    from nnfin.errors import ConfigError
    from nnfin.finance.calibration import check_surrogate

    run = SimpleNamespace(targets=["sigma"], features=["moneyness", "tau", "r", "log_time_value"],
                          config=SimpleNamespace(data=SimpleNamespace(kind="implied-vol")), dir=None)
    with pytest.raises(ConfigError, match=r"predicts 'sigma' .* solver network \(the inverse map\)"):
        check_surrogate(run)
