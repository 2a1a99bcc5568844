"""The samples of a ``[data]`` table, whatever their source: a lecture target, a file or a
finance generator, with the derivative targets of differential training when asked for.

>>> from nnfin.config import DataConfig
>>> x, y, features, targets, d = load_samples(DataConfig(kind="cos", n=3, derivatives={"x": "dydx"}))
>>> features, targets, d.shape
(['x'], ['y'], (3, 1))
"""

from __future__ import annotations

import numpy as np

from nnfin.config import BUILTIN_TARGETS, DataConfig
from nnfin.data.derivatives import derivative_columns, exact_derivative
from nnfin.data.files import read_frame, table_arrays
from nnfin.data.functions import sample_function
from nnfin.errors import ConfigError

Samples = tuple[np.ndarray, np.ndarray, list[str], list[str], "np.ndarray | None"]


def load_samples(cfg: DataConfig) -> Samples:
    """``x, y, features, targets, d``: d is (n, k) dy/dfeature for ``cfg.derivatives``, or None."""
    if cfg.kind in BUILTIN_TARGETS:
        x, y = sample_function(cfg.kind, n=cfg.n, low=cfg.low, high=cfg.high, sampling=cfg.sampling,
                               noise=cfg.noise, coefficients=cfg.coefficients, seed=cfg.seed)
        d = None
        if cfg.derivatives:
            if set(cfg.derivatives) != {"x"} or cfg.derivatives["x"] != "dydx":
                raise ConfigError(f"[data] derivatives = {cfg.derivatives!r}: kind = {cfg.kind!r} "
                                  "has one input; use derivatives = {x = \"dydx\"}")
            d = exact_derivative(cfg.kind, x, cfg.coefficients)
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
    return x, y, features, targets, derivative_columns(frame, cfg.derivatives, features, source)
