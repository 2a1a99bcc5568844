"""The report's hedging test for Heston price surrogates: Euler paths, COS price and delta."""

from __future__ import annotations

import numpy as np
import pytest

import nnfin
from nnfin.app.report import HEDGE_HESTON, HEDGE_PATHS, evaluate
from nnfin.finance.heston import heston_cos_price, heston_cos_sensitivities

HESTON = ["data.kind=heston", "data.n=200", "data.options.N=128", "data.options.L=12",
          "train.epochs=2", "train.progress=false", "train.device=cpu", "model.neurons=[8]",
          "model.activation=tanh", "data.split=[0.8,0.1,0.1]"]


def test_the_cheap_cos_delta_of_the_hedge_matches_central_differences_of_a_fine_cos_price():
    rng = np.random.default_rng(3)
    n = 400
    m, tau, v0 = rng.uniform(0.6, 1.4, n), rng.uniform(0.4, 0.9, n), rng.uniform(0.05, 0.5, n)
    h = {k: HEDGE_HESTON[k] for k in ("rho", "kappa", "vbar", "gamma")}
    delta = heston_cos_sensitivities(m, tau, 0.05, v0=v0, n_terms=HEDGE_HESTON["N"],
                                     big_l=HEDGE_HESTON["L"], **h)[1]["moneyness"].numpy()
    step = 1e-5
    up = heston_cos_price(m + step, tau, 0.05, v0=v0, n_terms=2048, big_l=12, **h).numpy()
    down = heston_cos_price(m - step, tau, 0.05, v0=v0, n_terms=2048, big_l=12, **h).numpy()
    np.testing.assert_allclose(delta, (up - down) / (2 * step), atol=1e-7)


@pytest.fixture(scope="module")
def heston_run():
    return nnfin.fit(overrides=HESTON, write=False)


def test_a_heston_run_is_hedged_along_euler_paths(heston_run):
    rep = evaluate(heston_run, n=20, train=False, greeks=False, hedge_paths=60, hedge_seed=1)
    h = rep.hedging.set_index("hedge")
    assert list(h.index) == ["exact delta", "network delta", "no hedge"]
    assert h["paths"].eq(60).all()
    exact = rep.hedge_pnls["exact delta"]
    # the exact delta removes most of the book's risk, and its P&L is centred on zero
    assert h.loc["no hedge", "std"] > 5 * h.loc["exact delta", "std"]
    assert abs(exact.mean()) < 4 * exact.std(ddof=1) / np.sqrt(len(exact))
    assert any("Heston by full-truncation Euler" in note for note in rep.notes)
    again = evaluate(heston_run, n=20, train=False, greeks=False, hedge_paths=60, hedge_seed=1)
    np.testing.assert_array_equal(again.hedge_pnls["network delta"], rep.hedge_pnls["network delta"])


def test_heston_reports_default_to_their_own_path_count(heston_run, monkeypatch):
    assert HEDGE_PATHS["heston"] < HEDGE_PATHS["black-scholes"]
    monkeypatch.setitem(HEDGE_PATHS, "heston", 12)
    rep = evaluate(heston_run, n=20, train=False, greeks=False)
    assert rep.hedging["paths"].eq(12).all()
    assert rep.settings["hedging"]["paths"] == 12
