"""Black–Scholes prices and Greeks against scipy closed forms, finite differences and
torch.autograd of the pricer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from nnfin.finance.black_scholes import bs_greeks, bs_price, bs_time_value, bs_vega
from nnfin.finance.sampling import sample

WIDE = {"moneyness": (0.4, 1.6), "tau": (0.2, 1.1), "r": (0.02, 0.1), "sigma": (0.05, 1.0)}


def scipy_bs(m, tau, r, sigma, option):
    """Reference closed forms with scipy.stats.norm (numpy, K = 1)."""
    sq = np.sqrt(tau)
    d1 = (np.log(m) + (r + 0.5 * sigma**2) * tau) / (sigma * sq)
    d2 = d1 - sigma * sq
    disc = np.exp(-r * tau)
    if option == "call":
        price = m * norm.cdf(d1) - disc * norm.cdf(d2)
        delta = norm.cdf(d1)
        theta = -m * norm.pdf(d1) * sigma / (2 * sq) - r * disc * norm.cdf(d2)
        rho = tau * disc * norm.cdf(d2)
    else:
        price = disc * norm.cdf(-d2) - m * norm.cdf(-d1)
        delta = norm.cdf(d1) - 1
        theta = -m * norm.pdf(d1) * sigma / (2 * sq) + r * disc * norm.cdf(-d2)
        rho = -tau * disc * norm.cdf(-d2)
    gamma = norm.pdf(d1) / (m * sigma * sq)
    vega = m * norm.pdf(d1) * sq
    return price, {"delta": delta, "gamma": gamma, "vega": vega, "theta": theta, "rho": rho}


@pytest.fixture(scope="module")
def points():
    return sample(WIDE, n=400, seed=7)


@pytest.mark.parametrize("option", ["call", "put"])
def test_price_and_greeks_match_scipy(points, option):
    m, tau, r, s = (points[k] for k in ("moneyness", "tau", "r", "sigma"))
    ref_price, ref = scipy_bs(m, tau, r, s, option)
    price = bs_price(m, tau, r, s, option).numpy()
    np.testing.assert_allclose(price, np.maximum(ref_price, 0), rtol=1e-12, atol=1e-14)
    greeks = bs_greeks(m, tau, r, s, option)
    for name, values in greeks.items():
        np.testing.assert_allclose(values.numpy(), ref[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)


def test_put_call_parity_and_time_value(points):
    m, tau, r, s = (points[k] for k in ("moneyness", "tau", "r", "sigma"))
    call, put = bs_price(m, tau, r, s, "call").numpy(), bs_price(m, tau, r, s, "put").numpy()
    np.testing.assert_allclose(call - put, m - np.exp(-r * tau), atol=1e-14)
    tv = bs_time_value(m, tau, r, s).numpy()
    np.testing.assert_allclose(tv, call - np.maximum(m - np.exp(-r * tau), 0), atol=1e-14)
    np.testing.assert_allclose(tv, put - np.maximum(np.exp(-r * tau) - m, 0), atol=1e-14)


@pytest.mark.parametrize("option", ["call", "put"])
def test_greeks_match_finite_differences(points, option):
    m, tau, r, s = (torch.tensor(points[k][:100]) for k in ("moneyness", "tau", "r", "sigma"))
    g = bs_greeks(m, tau, r, s, option)
    h = 1e-5

    def fd(f):
        return ((f(h) - f(-h)) / (2 * h)).numpy()

    checks = {
        "delta": fd(lambda e: bs_price(m + e, tau, r, s, option)),
        "vega": fd(lambda e: bs_price(m, tau, r, s + e, option)),
        "rho": fd(lambda e: bs_price(m, tau, r + e, s, option)),
        "theta": -fd(lambda e: bs_price(m, tau + e, r, s, option)),
        "gamma": ((bs_price(m + 1e-4, tau, r, s, option) - 2 * bs_price(m, tau, r, s, option)
                   + bs_price(m - 1e-4, tau, r, s, option)) / 1e-8).numpy(),
    }
    for name, approx in checks.items():
        tol = 1e-3 if name == "gamma" else 1e-6
        scale = np.maximum(1.0, np.abs(g[name].numpy()))
        assert np.max(np.abs(g[name].numpy() - approx) / scale) < tol, name


@pytest.mark.parametrize("option", ["call", "put"])
def test_greeks_match_autograd(points, option):
    cols = [torch.tensor(points[k][:200], requires_grad=True)
            for k in ("moneyness", "tau", "r", "sigma")]
    m, tau, r, s = cols
    price = bs_price(m, tau, r, s, option)
    dm, dtau, dr, ds = torch.autograd.grad(price.sum(), cols, create_graph=True)
    (dmm,) = torch.autograd.grad(dm.sum(), m)
    g = bs_greeks(*(c.detach() for c in cols), option)
    keep = price.detach() > 1e-300  # the 0-floor cuts the graph of worthless options
    for name, auto in {"delta": dm, "gamma": dmm, "vega": ds, "theta": -dtau, "rho": dr}.items():
        torch.testing.assert_close(auto.detach()[keep], g[name][keep], rtol=1e-10, atol=1e-12,
                                   msg=name)


def test_known_value_and_scaling():
    # Hull's textbook case S0 = 42, K = 40, r = 0.1, sigma = 0.2, T = 0.5: call 4.76, put 0.81
    k = 40.0
    call = float(bs_price(42 / k, 0.5, 0.1, 0.2, "call")) * k
    put = float(bs_price(42 / k, 0.5, 0.1, 0.2, "put")) * k
    assert round(call, 2) == 4.76 and round(put, 2) == 0.81
    assert float(bs_vega(1.0, 1.0, 0.0, 0.2)) == pytest.approx(norm.pdf(0.1), rel=1e-14)


def test_vectorised_broadcast_and_float64():
    v = bs_price(torch.tensor([0.9, 1.0, 1.1]), 0.5, 0.03, torch.tensor([0.2]))
    assert v.dtype == torch.float64 and v.shape == (3,)
    assert bool((v[1:] > v[:-1]).all())  # calls increase with moneyness
    assert math.isclose(float(bs_price(1.6, 1.1, 0.1, 1e-9)), 1.6 - math.exp(-0.11), rel_tol=1e-15)
