"""Finance datasets: Black–Scholes prices and Greeks, implied volatilities, Heston (COS).

>>> from nnfin.finance import generate, FEATURES, TARGETS
>>> df, meta = generate("implied-vol", n=100, seed=0)
>>> FEATURES["implied-vol"], TARGETS["implied-vol"]
(['moneyness', 'tau', 'r', 'log_time_value'], ['sigma'])

``calibrate(run, frame)``: the parameters a trained surrogate takes, fitted to quoted surfaces
(all at once, through the network; :mod:`nnfin.finance.calibration`).

``greeks(run, frame)``: a trained price surrogate's derivatives with respect to every input
and its named Greeks (delta, gamma, vega, theta, rho), by autograd in the data's units.
"""

from __future__ import annotations

from nnfin.finance.black_scholes import bs_greeks, bs_price, bs_time_value
from nnfin.finance.calibration import calibrate
from nnfin.finance.datasets import (
    FEATURES,
    GENERATOR_VERSION,
    KINDS,
    TARGETS,
    describe_kinds,
    generate,
    parse_range_assignment,
    resolve_ranges,
)
from nnfin.finance.heston import heston_cf, heston_cos_price
from nnfin.finance.implied_volatility import implied_vol, implied_vol_brentq
from nnfin.finance.store import read_dataset, write_dataset
from nnfin.finance.surrogate import greeks

__all__ = [
    "FEATURES", "GENERATOR_VERSION", "KINDS", "TARGETS", "bs_greeks", "bs_price",
    "bs_time_value", "calibrate", "describe_kinds", "generate", "greeks", "heston_cf",
    "heston_cos_price",
    "implied_vol", "implied_vol_brentq", "parse_range_assignment", "read_dataset",
    "resolve_ranges", "write_dataset",
]
