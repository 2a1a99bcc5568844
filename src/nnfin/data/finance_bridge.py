"""``[data] kind = "black-scholes" | "implied-vol" | "heston"``: generated option datasets.

Options of the generator go in ``[data.options]`` (e.g. ``ranges = "narrow"``,
``sampler = "uniform"``, ``greeks = true``); ``features``/``target`` pick columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nnfin.config import BUILTIN_TARGETS, DataConfig
from nnfin.data.files import table_arrays
from nnfin.errors import ConfigError, one_of

FINANCE_KINDS = ("black-scholes", "implied-vol", "heston")
ALL_KINDS = (*BUILTIN_TARGETS, "file", *FINANCE_KINDS)


def finance_frame(cfg: DataConfig) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Generate the dataset ``cfg.kind`` names: the frame and its default features/targets."""
    if cfg.kind not in FINANCE_KINDS:
        raise ConfigError(f"[data] kind = {cfg.kind!r} is unknown; {one_of(cfg.kind, ALL_KINDS)}")
    from nnfin.finance.datasets import FEATURES, TARGETS, generate

    try:
        frame, _meta = generate(cfg.kind, n=cfg.n, seed=cfg.seed, **cfg.options)
    except TypeError as exc:  # an unknown keyword in [data.options]
        raise ConfigError(f"[data.options] for kind = {cfg.kind!r}: {exc}") from None
    return frame, list(FEATURES[cfg.kind]), list(TARGETS[cfg.kind])


def finance_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Generate the dataset and select its feature and target columns."""
    frame, features, targets = finance_frame(cfg)
    return table_arrays(frame, features=cfg.features or features, target=cfg.target or targets,
                        source=cfg.kind)
