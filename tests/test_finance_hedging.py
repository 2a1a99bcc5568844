"""Delta hedging along simulated paths: the simulators and the hedge, checked by their theory.

* GBM: the mean and variance of log S_T;
* Heston (full-truncation Euler): a Monte Carlo call price against the COS price, E[S_T] = S0 e^{rT};
* exact-delta hedging: P&L mean ~ 0 under the risk-neutral drift and under another drift (the
  hedge removes the drift up to O(dt); the unhedged book does not), P&L std ~ 1/sqrt(rebalancing count).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnfin.errors import ConfigError
from nnfin.finance.black_scholes import bs_greeks, bs_price
from nnfin.finance.hedging import (
    Book,
    hedge_book,
    option_inputs,
    pnl_summary,
    simulate_gbm,
    simulate_heston,
)
from nnfin.finance.heston import heston_cos_price

HESTON = {"r": 0.03, "kappa": 1.5, "vbar": 0.05, "gamma": 0.4, "rho": -0.6}


def bs_price_fn(f):
    return bs_price(*(f[c].to_numpy() for c in ("moneyness", "tau", "r", "sigma"))).numpy()


def bs_delta_fn(f):
    return bs_greeks(*(f[c].to_numpy() for c in ("moneyness", "tau", "r", "sigma")))["delta"].numpy()


def test_gbm_log_returns_have_the_right_mean_and_variance():
    m = simulate_gbm(1.2, r=0.05, sigma=0.3, horizon=0.75, steps=30, paths=40_000, seed=1, mu=0.1)
    log_ret = np.log(m.spot[:, -1] / 1.2)
    mean, var = (0.1 - 0.5 * 0.09) * 0.75, 0.09 * 0.75
    assert abs(log_ret.mean() - mean) < 4 * math.sqrt(var / 40_000)
    assert log_ret.var() == pytest.approx(var, rel=0.03)
    assert np.allclose(m.spot[:, 0], 1.2) and m.times[-1] == pytest.approx(0.75)
    again = simulate_gbm(1.2, r=0.05, sigma=0.3, horizon=0.75, steps=30, paths=10, seed=1, mu=0.1)
    other = simulate_gbm(1.2, r=0.05, sigma=0.3, horizon=0.75, steps=30, paths=10, seed=2, mu=0.1)
    assert np.array_equal(again.spot, simulate_gbm(1.2, r=0.05, sigma=0.3, horizon=0.75, steps=30,
                                                   paths=10, seed=1, mu=0.1).spot)
    assert not np.allclose(again.spot, other.spot)


def test_heston_paths_price_a_call_as_the_cos_method_does():
    paths, v0, tau = 40_000, 0.04, 0.5
    m = simulate_heston(1.0, v0, **HESTON, horizon=tau, steps=100, paths=paths, seed=3)
    disc = math.exp(-HESTON["r"] * tau)
    assert (disc * m.spot[:, -1]).mean() == pytest.approx(1.0, abs=4 * (disc * m.spot[:, -1]).std()
                                                          / math.sqrt(paths))
    assert (m.state["v0"] >= 0).all() and m.state["v0"][:, 0] == pytest.approx(v0)
    for strike in (0.9, 1.0, 1.1):
        payoff = disc * np.maximum(m.spot[:, -1] - strike, 0.0)
        params = {k: v for k, v in HESTON.items() if k != "r"}
        cos = strike * float(heston_cos_price(1.0 / strike, tau, HESTON["r"], **params, v0=v0))
        # Monte Carlo error (4 standard errors) plus the Euler scheme's bias at 100 steps
        assert payoff.mean() == pytest.approx(cos, abs=4 * payoff.std() / math.sqrt(paths) + 1e-3)


def test_option_inputs_are_one_row_per_option_and_path():
    m = simulate_heston(1.0, 0.04, **HESTON, horizon=0.5, steps=5, paths=3, seed=0)
    f = option_inputs(m, Book(strikes=(0.8, 1.25), maturity=1.0), 2)
    assert len(f) == 6 and list(f.columns) == ["moneyness", "tau", "r", "rho", "kappa", "vbar",
                                               "gamma", "v0"]
    np.testing.assert_allclose(f["moneyness"][:3], m.spot[:, 2] / 0.8)
    np.testing.assert_allclose(f["moneyness"][3:], m.spot[:, 2] / 1.25)
    np.testing.assert_allclose(f["tau"], 1.0 - m.times[2])
    np.testing.assert_allclose(f["v0"][3:], m.state["v0"][:, 2])


@pytest.fixture(scope="module")
def exact_pnls():
    book = Book(strikes=(0.9, 1.0, 1.1), maturity=0.9)
    out = {}
    for steps in (16, 64, 256):
        m = simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.5, steps=steps, paths=4000, seed=steps)
        out[steps] = hedge_book(m, book, bs_delta_fn, bs_price_fn)
    return out


def test_exact_delta_hedging_error_shrinks_like_one_over_sqrt_of_the_rebalancing_count(exact_pnls):
    std = {k: p.std(ddof=1) for k, p in exact_pnls.items()}
    assert std[16] / std[64] == pytest.approx(2.0, rel=0.12)
    assert std[64] / std[256] == pytest.approx(2.0, rel=0.12)


def test_exact_delta_hedging_pnl_has_mean_zero_under_the_risk_neutral_drift(exact_pnls):
    for p in exact_pnls.values():
        assert abs(p.mean()) < 4 * p.std(ddof=1) / math.sqrt(len(p))


def test_the_hedge_removes_the_drift_and_the_unhedged_book_keeps_it():
    book = Book(strikes=(0.9, 1.0, 1.1), maturity=0.9)
    m = simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.5, steps=126, paths=4000, seed=11, mu=0.4)
    hedged = hedge_book(m, book, bs_delta_fn, bs_price_fn)
    naked = hedge_book(m, book, None, bs_price_fn)
    assert abs(hedged.mean()) < 0.1 * hedged.std(ddof=1)  # a bias of order mu^2 dt remains
    assert naked.mean() < -10 * naked.std(ddof=1) / math.sqrt(4000)  # short calls in a rally lose
    assert hedged.std() < 0.1 * naked.std()


def test_a_worse_delta_hedges_worse_and_the_summary_says_so():
    book = Book(strikes=(1.0,), maturity=0.9)
    m = simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.5, steps=126, paths=3000, seed=5)
    exact = hedge_book(m, book, bs_delta_fn, bs_price_fn)
    noisy = hedge_book(m, book, lambda f: bs_delta_fn(f) + 0.05 * np.sin(40 * f["moneyness"]),
                       bs_price_fn)
    table = pnl_summary({"exact delta": exact, "noisy delta": noisy}, "exact delta")
    assert table["hedge"].tolist() == ["exact delta", "noisy delta"]
    assert table["std_ratio"].iloc[0] == 1.0 and table["std_ratio"].iloc[1] > 1.2
    assert table["paths"].eq(3000).all()


def test_a_book_expiring_at_the_horizon_pays_its_payoff():
    book = Book(strikes=(1.0,), maturity=0.25)
    m = simulate_gbm(1.0, r=0.0, sigma=0.2, horizon=0.25, steps=1, paths=5, seed=0)
    naked = hedge_book(m, book, None, bs_price_fn)  # premium minus payoff, no interest at r = 0
    premium = float(bs_price(1.0, 0.25, 0.0, 0.2))
    np.testing.assert_allclose(naked, premium - np.maximum(m.spot[:, -1] - 1.0, 0.0), rtol=1e-12)


def test_heston_paths_plug_into_the_same_hedge():
    """A Heston book hedged with the COS delta (central difference in moneyness) beats no hedge."""
    m = simulate_heston(1.0, 0.04, **HESTON, horizon=0.25, steps=20, paths=300, seed=2)
    book = Book(strikes=(1.0,), maturity=0.5)
    keys = ("rho", "kappa", "vbar", "gamma", "v0")

    def price(f, shift=0.0):
        return heston_cos_price(f["moneyness"].to_numpy() + shift, f["tau"].to_numpy(),
                                f["r"].to_numpy(), **{k: f[k].to_numpy() for k in keys},
                                n_terms=256, big_l=12.0).numpy()

    def delta(f):
        return (price(f, 1e-4) - price(f, -1e-4)) / 2e-4

    hedged, naked = hedge_book(m, book, delta, price), hedge_book(m, book, None, price)
    assert hedged.std() < 0.3 * naked.std()


def test_bad_settings_are_refused_in_one_line():
    m = simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.5, steps=4, paths=3)
    cases = [
        (lambda: hedge_book(m, Book(maturity=0.25), bs_delta_fn, bs_price_fn), "ends before the horizon"),
        (lambda: Book(strikes=(1.0, -0.5)), "strikes"),
        (lambda: Book(strikes=()), "strikes"),
        (lambda: Book(option="put"), "calls"),
        (lambda: simulate_gbm(1.0, r=0.05, sigma=0.2, horizon=0.5, steps=0, paths=3), "steps = 0"),
        (lambda: simulate_gbm(1.0, r=0.05, sigma=-0.2, horizon=0.5, steps=2, paths=3), "sigma"),
        (lambda: simulate_gbm(1.0, r=math.nan, sigma=0.2, horizon=0.5, steps=2, paths=3), "r = nan"),
        (lambda: simulate_heston(1.0, 0.04, **{**HESTON, "rho": -1.5}, horizon=0.5, steps=2,
                                 paths=3), "rho"),
    ]
    for call, fragment in cases:
        with pytest.raises(ConfigError) as exc:
            call()
        assert fragment in str(exc.value) and "\n" not in str(exc.value)
