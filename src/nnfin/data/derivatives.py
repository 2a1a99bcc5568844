"""Derivative targets for differential training (Huge & Savine 2020).

``[data] derivatives = {moneyness = "delta", sigma = "vega", tau = "-theta"}`` maps input
features to the columns that hold dy/d(feature); a leading ``-`` negates the column (theta is
-dV/dtau). For the built-in targets, ``derivatives = {x = "dydx"}`` uses the exact derivative.

>>> cfg = DataConfig(kind="cos", n=3, sampling="grid", derivatives={"x": "dydx"})
>>> x, y, feats, targets, d = load_all(cfg)
>>> np.allclose(d[:, 0], -np.sin(x[:, 0]))
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nnfin.config import BUILTIN_TARGETS, DataConfig
from nnfin.data.files import columns_as_array, read_frame, table_arrays
from nnfin.data.functions import sample_function
from nnfin.errors import ConfigError, DataError

Arrays = tuple[np.ndarray, np.ndarray, list[str], list[str], "np.ndarray | None"]

_EXACT = {
    "cos": lambda x, c: -np.sin(x),
    "sin": lambda x, c: np.cos(x),
    "exp": lambda x, c: np.exp(x),
    "polynomial": lambda x, c: np.polynomial.polynomial.polyval(
        x, np.polynomial.polynomial.polyder(np.asarray(c, dtype=np.float64))),
}


def load_all(cfg: DataConfig) -> Arrays:
    """``x, y, features, targets, d``: d is (n, k) dy/dfeature for ``cfg.derivatives``, or None."""
    if cfg.kind in BUILTIN_TARGETS:
        x, y = sample_function(cfg.kind, n=cfg.n, low=cfg.low, high=cfg.high, sampling=cfg.sampling,
                               noise=cfg.noise, coefficients=cfg.coefficients, seed=cfg.seed)
        d = None
        if cfg.derivatives:
            if set(cfg.derivatives) != {"x"} or cfg.derivatives["x"] != "dydx":
                raise ConfigError(f"[data] derivatives = {cfg.derivatives!r}: kind = {cfg.kind!r} "
                                  "has one input; use derivatives = {x = \"dydx\"}")
            d = _EXACT[cfg.kind](x, cfg.coefficients)
        return x, y, ["x"], ["y"], d
    if cfg.kind == "file":
        if not cfg.path:
            raise ConfigError("[data] kind = 'file' needs path = 'your.csv' (or .parquet)")
        frame, source = read_frame(cfg.path), cfg.path
        feats, target = cfg.features, cfg.target
    else:
        from nnfin.data.finance_bridge import finance_frame

        frame, default_feats, default_targets = finance_frame(cfg)
        source = cfg.kind
        feats, target = cfg.features or default_feats, cfg.target or default_targets
    columns = [c.lstrip("-") for c in cfg.derivatives.values()]
    x, y, features, targets = table_arrays(frame, features=feats, target=target, source=source,
                                           exclude=columns)
    return x, y, features, targets, _derivative_columns(frame, cfg.derivatives, features, source)


def _derivative_columns(frame: pd.DataFrame, mapping: dict[str, str], features: list[str],
                        source: str) -> np.ndarray | None:
    if not mapping:
        return None
    for feat in mapping:
        if feat not in features:
            raise ConfigError(f"[data] derivatives: {feat!r} is not an input feature "
                              f"(features: {', '.join(features)})")
    cols = [c.lstrip("-") for c in mapping.values()]
    d = columns_as_array(frame, cols, field="[data] derivatives", source=source)
    signs = np.array([-1.0 if c.startswith("-") else 1.0 for c in mapping.values()])
    if d.shape[0] != frame.shape[0]:
        raise DataError(f"[data] derivatives: column lengths differ in {source!r}")
    return d * signs


def derivative_feature_index(cfg: DataConfig, features: list[str]) -> list[int]:
    """Positions of the differentiated features among the model inputs."""
    return [features.index(f) for f in cfg.derivatives]
