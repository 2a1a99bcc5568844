"""Derivative targets for differential training (Huge & Savine 2020).

``[data] derivatives = {moneyness = "delta", sigma = "vega", tau = "-theta"}`` maps input
features to the columns that hold dy/d(feature); a leading ``-`` negates the column (theta is
-dV/dtau). For the built-in targets, ``derivatives = {x = "dydx"}`` uses the exact derivative.

>>> x = np.array([[0.0], [1.0]])
>>> np.allclose(exact_derivative("cos", x, [])[:, 0], -np.sin(x[:, 0]))
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nnfin.config import DataConfig
from nnfin.data.files import columns_as_array
from nnfin.errors import ConfigError, DataError


def exact_derivative(kind: str, x: np.ndarray, coefficients: list[float]) -> np.ndarray:
    """dy/dx of a built-in target (cos, sin, exp, polynomial) at ``x``."""
    return _EXACT[kind](x, coefficients)


_EXACT = {
    "cos": lambda x, c: -np.sin(x),
    "sin": lambda x, c: np.cos(x),
    "exp": lambda x, c: np.exp(x),
    "polynomial": lambda x, c: np.polynomial.polynomial.polyval(
        x, np.polynomial.polynomial.polyder(np.asarray(c, dtype=np.float64))),
}


def derivative_columns(frame: pd.DataFrame, mapping: dict[str, str], features: list[str],
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
