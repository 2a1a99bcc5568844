"""Heston COS prices against an independent quadrature of the characteristic function
(Heston's P1/P2 form, scipy.integrate.quad), a published reference value and the
Black–Scholes limit of vanishing vol of vol."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from nnfin.errors import ConfigError
from nnfin.finance import generate
from nnfin.finance.black_scholes import bs_price
from nnfin.finance.heston import heston_cf, heston_cos_price

# (moneyness, tau, r, rho, kappa, vbar, gamma, v0)
CASES = [
    (1.0, 1.0, 0.0, -0.5711, 1.5768, 0.0398, 0.5751, 0.0175),  # Fang & Oosterlee (2008)
    (0.8, 0.5, 0.05, -0.7, 1.0, 0.04, 0.3, 0.06),
    (1.3, 1.4, 0.1, -0.95, 0.2, 0.5, 0.5, 0.05),
    (0.6, 0.1, 0.02, -0.3, 2.0, 0.01, 0.45, 0.5),
    (1.1, 0.25, 0.08, 0.0, 0.05, 0.3, 0.1, 0.2),
    (0.95, 1.2, 0.03, -0.9, 1.8, 0.02, 0.49, 0.07),
]


def _cf_quad(u: complex, m, tau, r, rho, kappa, vbar, gamma, v0) -> complex:
    """E[exp(i u ln S_T)] with S0 = m, textbook little-trap form (complex u allowed)."""
    iu = 1j * u
    beta = kappa - rho * gamma * iu
    d = cmath.sqrt(beta * beta + gamma * gamma * (iu + u * u))
    g = (beta - d) / (beta + d)
    e = cmath.exp(-d * tau)
    c = kappa * vbar / gamma**2 * ((beta - d) * tau - 2 * cmath.log((1 - g * e) / (1 - g)))
    dd = (beta - d) / gamma**2 * (1 - e) / (1 - g * e)
    return cmath.exp(iu * (math.log(m) + r * tau) + c + dd * v0)


def heston_call_quad(m, tau, r, rho, kappa, vbar, gamma, v0) -> float:
    """Call = S0 P1 - K e^{-r tau} P2 (K = 1) by Gil-Pelaez inversion with quad."""
    p = (m, tau, r, rho, kappa, vbar, gamma, v0)
    fwd = _cf_quad(-1j, *p)

    def f1(u):
        return (_cf_quad(u - 1j, *p) / (1j * u * fwd)).real

    def f2(u):
        return (_cf_quad(u, *p) / (1j * u)).real

    kw = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 2000}
    p1 = 0.5 + quad(f1, 0, np.inf, **kw)[0] / math.pi
    p2 = 0.5 + quad(f2, 0, np.inf, **kw)[0] / math.pi
    return m * p1 - math.exp(-r * tau) * p2


def _price(cases, **kw):
    cols = list(zip(*cases, strict=True))
    return heston_cos_price(cols[0], cols[1], cols[2], rho=cols[3], kappa=cols[4],
                            vbar=cols[5], gamma=cols[6], v0=cols[7], **kw).numpy()


def test_cos_matches_quadrature():
    cos = _price(CASES)
    ref = np.array([heston_call_quad(*c) for c in CASES])
    assert np.max(np.abs(cos - ref)) < 1e-8, np.abs(cos - ref)


def test_reference_value_fang_oosterlee():
    # S0 = K = 100, T = 1, r = 0: reference call 5.785155450 (Fang & Oosterlee, 2008)
    assert _price(CASES[:1])[0] * 100 == pytest.approx(5.785155450, abs=1e-7)


def test_put_call_parity_and_put_pricing():
    call, put = _price(CASES, option="call"), _price(CASES, option="put")
    m, tau, r = (np.array([c[i] for c in CASES]) for i in range(3))
    np.testing.assert_allclose(call - put, m - np.exp(-r * tau), atol=1e-14)


@pytest.mark.parametrize(("gamma", "tol"), [(0.0, 1e-12), (1e-9, 1e-9), (1e-4, 1e-5)])
def test_black_scholes_limit(gamma, tol):
    m = np.array([0.6, 0.9, 1.0, 1.2, 1.4])
    tau = np.array([0.1, 0.5, 1.0, 1.4, 0.7])
    r, v0 = 0.04, 0.09
    cos = heston_cos_price(m, tau, r, rho=-0.7, kappa=1.3, vbar=v0, gamma=gamma, v0=v0).numpy()
    bs = bs_price(m, tau, r, math.sqrt(v0)).numpy()
    assert np.max(np.abs(cos - bs)) < tol  # the gap is O(gamma)


def test_deterministic_variance_limit_with_v0_not_vbar():
    # gamma = 0: BS with the mean variance vbar + (v0 - vbar)(1 - e^{-kappa tau})/(kappa tau)
    kappa, vbar, v0, tau = 2.0, 0.04, 0.25, 0.8
    var = vbar + (v0 - vbar) * (1 - math.exp(-kappa * tau)) / (kappa * tau)
    cos = heston_cos_price(1.1, tau, 0.02, rho=-0.5, kappa=kappa, vbar=vbar, gamma=0.0, v0=v0)
    assert float(cos[0]) == pytest.approx(float(bs_price(1.1, tau, 0.02, math.sqrt(var))),
                                          abs=1e-12)


def test_characteristic_function_edges():
    u = torch.linspace(0, 50, 11, dtype=torch.float64)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    phi = heston_cf(u, t(1.0), t(0.03), t(-0.5), t(0.0), t(0.1), t(0.4), t(0.1))  # kappa = 0
    assert torch.isfinite(phi).all() and phi[0] == 1
    assert (phi.abs() <= 1 + 1e-12).all()
    ref = _cf_quad(3.0, 1.0, 1.0, 0.03, -0.5, 1.0, 0.1, 0.4, 0.1)
    mine = complex(heston_cf(t(3.0), t(1.0), t(0.03), t(-0.5), t(1.0), t(0.1), t(0.4), t(0.1)))
    assert abs(mine - ref) < 1e-14


def test_chunking_and_paper_ranges_are_finite():
    df, meta = generate("heston", n=300, seed=4)
    assert meta["N"] == 1500 and meta["L"] == 50.0 and meta["ranges_preset"] == "wide"
    assert np.isfinite(df["price"]).all() and (df["price"] >= 0).all()
    m, tau, r = (df[k].to_numpy() for k in ("moneyness", "tau", "r"))
    assert (df["price"] >= np.maximum(m - np.exp(-r * tau), 0) - 1e-12).all()
    assert (df["price"] <= m).all()
    cols = [df[k].to_numpy() for k in ("moneyness", "tau", "r")]
    params = {k: df[k].to_numpy() for k in ("rho", "kappa", "vbar", "gamma", "v0")}
    chunked = heston_cos_price(*cols, **params, chunk=7).numpy()
    np.testing.assert_array_equal(chunked, df["price"].to_numpy())


def test_coarse_cos_settings_are_options():
    _, meta = generate("heston", n=5, seed=0, N=128, L=10)
    assert (meta["N"], meta["L"]) == (128, 10.0)
    with pytest.raises(ConfigError, match="N = 1"):
        generate("heston", n=5, N=1)
    with pytest.raises(ConfigError, match="L = -1"):
        generate("heston", n=5, L=-1)


def test_sensitivities_match_the_deterministic_variance_closed_form():
    # gamma = 0: V = BS(m, tau, r, sigma) with sigma^2 tau = w = vbar tau + (v0 - vbar) D,
    # D = (1 - e^{-kappa tau}) / kappa, so dV/dv0 = vega D / (2 sigma tau) and
    # dV/dvbar = vega (tau - D) / (2 sigma tau); delta and rho are Black-Scholes'.
    from nnfin.finance.black_scholes import bs_greeks
    from nnfin.finance.heston import heston_cos_sensitivities

    m = np.array([0.7, 0.95, 1.0, 1.2, 1.35])
    tau = np.array([0.2, 0.5, 1.0, 1.3, 0.8])
    r, kappa, vbar, v0 = 0.03, 1.5, 0.06, 0.2
    big_d = (1 - np.exp(-kappa * tau)) / kappa
    sigma = np.sqrt((vbar * tau + (v0 - vbar) * big_d) / tau)
    price, d = heston_cos_sensitivities(m, tau, r, rho=-0.5, kappa=kappa, vbar=vbar, gamma=0.0,
                                        v0=v0)
    g = {k: v.numpy() for k, v in bs_greeks(m, tau, r, sigma).items()}
    assert np.allclose(price.numpy(), bs_price(m, tau, r, sigma).numpy(), atol=1e-11)
    assert np.allclose(d["moneyness"].numpy(), g["delta"], atol=1e-9)
    assert np.allclose(d["r"].numpy(), g["rho"], atol=1e-9)
    assert np.allclose(d["v0"].numpy(), g["vega"] * big_d / (2 * sigma * tau), atol=1e-9)
    assert np.allclose(d["vbar"].numpy(), g["vega"] * (tau - big_d) / (2 * sigma * tau), atol=1e-9)


def test_sensitivities_match_central_differences_of_the_price():
    from nnfin.finance.heston import HESTON_INPUTS, heston_cos_sensitivities

    x = np.array(CASES[1:], dtype=np.float64)
    cols = {name: x[:, j] for j, name in enumerate(HESTON_INPUTS)}
    _, d = heston_cos_sensitivities(**{"m": cols.pop("moneyness")}, **cols)
    h = 1e-6
    for j, name in enumerate(HESTON_INPUTS):
        up, down = x.copy(), x.copy()
        up[:, j] += h
        down[:, j] -= h
        fd = (_price(up) - _price(down)) / (2 * h)
        assert np.allclose(d[name].numpy(), fd, atol=2e-8), name


def test_heston_greeks_columns_are_the_training_labels():
    df, meta = generate("heston", n=6, seed=3, greeks=True, N=256, L=12)
    plain, _ = generate("heston", n=6, seed=3, N=256, L=12)
    assert meta["greeks_columns"] == [f"dV_d{c}" for c in meta["features"]]
    assert np.array_equal(df["price"].to_numpy(), plain["price"].to_numpy())
    assert np.isfinite(df[meta["greeks_columns"]].to_numpy()).all()
