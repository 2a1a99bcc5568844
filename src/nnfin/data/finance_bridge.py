"""``[data] kind = "black-scholes" | "implied-vol" | "heston"``: generated option datasets.

Options of the generator go in ``[data.options]`` (e.g. ``ranges = "narrow"``,
``sampler = "uniform"``, ``greeks = true``); ``features``/``target`` pick columns.
"""

from __future__ import annotations

import numpy as np

from nnfin.config import BUILTIN_TARGETS, DataConfig
from nnfin.data.files import columns_as_array
from nnfin.errors import ConfigError, one_of

FINANCE_KINDS = ("black-scholes", "implied-vol", "heston")
ALL_KINDS = (*BUILTIN_TARGETS, "file", *FINANCE_KINDS)


def finance_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Generate the dataset ``cfg.kind`` names and select its feature and target columns."""
    if cfg.kind not in FINANCE_KINDS:
        raise ConfigError(f"[data] kind = {cfg.kind!r} is unknown; {one_of(cfg.kind, ALL_KINDS)}")
    from nnfin.finance.datasets import FEATURES, TARGETS, generate

    try:
        frame, _meta = generate(cfg.kind, n=cfg.n, seed=cfg.seed, **cfg.options)
    except TypeError as exc:  # an unknown keyword in [data.options]
        raise ConfigError(f"[data.options] for kind = {cfg.kind!r}: {exc}") from None
    features = list(cfg.features or FEATURES[cfg.kind])
    target = cfg.target or TARGETS[cfg.kind]
    targets = [target] if isinstance(target, str) else list(target)
    x = columns_as_array(frame, features, field="[data] features", source=cfg.kind)
    y = columns_as_array(frame, targets, field="[data] target", source=cfg.kind)
    return x, y, features, targets
