"""Implied volatility: the vectorised safeguarded Newton solver, the brentq reference and
the implied-vol datasets (log time value input)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnfin.finance import generate
from nnfin.finance.black_scholes import bs_price, bs_time_value, bs_vega
from nnfin.finance.implied_volatility import bs_price_scipy, implied_vol, implied_vol_brentq
from nnfin.finance.sampling import sample

WIDE = {"moneyness": (0.4, 1.6), "tau": (0.2, 1.1), "r": (0.02, 0.1), "sigma": (0.01, 1.0)}


@pytest.mark.parametrize("option", ["call", "put"])
def test_round_trip_recovers_sigma(option):
    p = sample(WIDE, n=5000, seed=3)
    m, tau, r, s = (p[k] for k in ("moneyness", "tau", "r", "sigma"))
    price = bs_price(m, tau, r, s, option)
    iv = implied_vol(price, m, tau, r, option).numpy()
    vega = bs_vega(m, tau, r, s).numpy()
    ok = vega > 1e-4
    assert ok.sum() > 3000
    assert not np.isnan(iv[ok]).any()
    assert np.max(np.abs(iv[ok] - s[ok])) < 1e-8
    # where vega is tiny sigma is ill-determined, but the price still matches
    solved = ~np.isnan(iv)
    back = bs_price(m[solved], tau[solved], r[solved], iv[solved], option).numpy()
    np.testing.assert_allclose(back, price.numpy()[solved], atol=1e-12)


def test_brentq_reference_agrees():
    p = sample(WIDE, n=60, seed=5)
    rows = zip(*(p[k] for k in ("moneyness", "tau", "r", "sigma")), strict=True)
    for m, tau, r, s in rows:
        if float(bs_vega(m, tau, r, s)) < 1e-4:
            continue
        price = bs_price_scipy(m, tau, r, s)
        assert price == pytest.approx(float(bs_price(m, tau, r, s)), abs=1e-14)
        ref = implied_vol_brentq(price, m, tau, r)
        assert abs(ref - s) < 1e-8
        assert abs(float(implied_vol(price, m, tau, r)) - ref) < 1e-8


def test_prices_outside_bounds_give_nan():
    m, tau, r = 1.0, 1.0, 0.05
    lower = m - math.exp(-r * tau)
    iv = implied_vol([lower, lower - 1e-3, m, 1.5, 0.0 + 0.2], m, tau, r).numpy()
    assert np.isnan(iv[:4]).all() and np.isfinite(iv[4])
    assert math.isnan(implied_vol_brentq(2.0, m, tau, r))


def test_vectorised_solver_is_fast_enough_for_datasets():
    df, _ = generate("implied-vol", n=20000, seed=1)
    iv = implied_vol(df["price"].to_numpy(), df["moneyness"].to_numpy(),
                     df["tau"].to_numpy(), df["r"].to_numpy())
    assert torch.isfinite(iv).all()
    assert float((iv - torch.tensor(df["sigma"].to_numpy())).abs().max()) < 1e-8


def test_implied_vol_dataset_columns_and_drop_rule():
    df, meta = generate("implied-vol", n=3000, seed=0)
    assert meta["features"] == ["moneyness", "tau", "r", "log_time_value"]
    assert meta["targets"] == ["sigma"]
    assert meta["rows"] == len(df) == 3000 - meta["dropped"] and meta["dropped"] > 0
    assert (df["time_value"] >= 1e-7).all()
    np.testing.assert_allclose(np.exp(df["log_time_value"]), df["time_value"], rtol=1e-14)
    m, tau, r, s = (df[k].to_numpy() for k in ("moneyness", "tau", "r", "sigma"))
    tv = df["price"] - np.maximum(m - np.exp(-r * tau), 0)
    np.testing.assert_allclose(df["time_value"], tv, atol=1e-14)
    np.testing.assert_allclose(df["time_value"], bs_time_value(m, tau, r, s).numpy(), rtol=1e-15)
    # the dropped samples are exactly those under the threshold
    full, _ = generate("black-scholes", n=3000, seed=0)
    tv_all = bs_time_value(*(full[k].to_numpy() for k in ("moneyness", "tau", "r", "sigma")))
    assert int((tv_all < 1e-7).sum()) == meta["dropped"]


def test_plain_variant_has_the_same_rows():
    a, _ = generate("implied-vol", n=500, seed=2, ranges="narrow")
    b, meta = generate("implied-vol-plain", n=500, seed=2, ranges="narrow")
    assert a.equals(b)
    assert meta["features"] == ["moneyness", "tau", "r", "price"]


def test_min_time_value_option():
    _, strict = generate("implied-vol", n=1000, seed=0, min_time_value=1e-3)
    _, loose = generate("implied-vol", n=1000, seed=0)
    assert strict["dropped"] > loose["dropped"] and strict["min_time_value"] == 1e-3
