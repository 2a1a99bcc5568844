"""The samples of a ``[data]`` table, whatever their source: a lecture target, a file or a
finance generator, with the derivative targets of differential training when asked for.

>>> from nnfin.config import DataConfig
>>> x, y, features, targets, d = load_samples(DataConfig(kind="cos", n=3, derivatives={"x": "dydx"}))
>>> features, targets, d.shape
(['x'], ['y'], (3, 1))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nnfin.config import BUILTIN_TARGETS, DataConfig
from nnfin.data.derivatives import derivative_columns, exact_derivative
from nnfin.data.files import read_frame, table_arrays
from nnfin.data.functions import sample_function
from nnfin.errors import ConfigError, DataError

Samples = tuple[np.ndarray, np.ndarray, list[str], list[str], "np.ndarray | None"]

MEMORY_SOURCE = "in-memory data"


def memory_frame(data: Any, *, features: str | Sequence[str] | None = None,
                 target: str | Sequence[str] | None = None
                 ) -> tuple[pd.DataFrame, list[str] | None, str | list[str] | None]:
    """In-memory samples as a table: ``(frame, features, target)`` for :func:`load_samples`.

    ``data`` is a DataFrame (columns picked by ``features``/``target``, as ``[data]`` picks a
    file's) or a pair ``(X, y)`` of arrays; their columns are named ``features`` (default
    ``x1, x2, ...``) and ``target`` (default ``y``, or ``y1, y2, ...`` for several outputs).

    >>> frame, feats, target = memory_frame((np.zeros((4, 2)), np.ones(4)))
    >>> list(frame.columns), feats, target
    (['x1', 'x2', 'y'], ['x1', 'x2'], ['y'])
    """
    feats = [features] if isinstance(features, str) else (list(features) if features else None)
    targs = [target] if isinstance(target, str) else (list(target) if target else None)
    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise DataError(f"data = a DataFrame of shape {data.shape} holds no samples")
        names = [str(c) for c in data.columns]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise DataError(f"data = a DataFrame with two columns named {twice!r}; give every column "
                            "its own name")
        return data, feats, targs
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"data = {type(data).__name__}: in-memory data are a pandas DataFrame or a "
                        "pair (X, y) of arrays")
    if any(np.iscomplexobj(part) for part in data):
        raise DataError("data = (X, y) holds complex numbers; give real ones")
    try:
        x = np.asarray(data[0], dtype=np.float64)
        y = np.asarray(data[1], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data = (X, y) must hold numbers: {str(exc).splitlines()[0]}") from None
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    y = y.reshape(-1, 1) if y.ndim == 1 else y
    if x.size == 0 or y.size == 0:
        raise DataError(f"data = (X, y) of shapes {np.shape(data[0])} and {np.shape(data[1])} holds "
                        "no samples")
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise DataError(f"data = (X, y) of shapes {np.shape(data[0])} and {np.shape(data[1])}: "
                        "X must be (n, n_features) and y (n,) or (n, n_targets)")
    feats = feats or [f"x{i + 1}" for i in range(x.shape[1])]
    targs = targs or (["y"] if y.shape[1] == 1 else [f"y{i + 1}" for i in range(y.shape[1])])
    if len(feats) != x.shape[1] or len(targs) != y.shape[1]:
        raise DataError(f"features = {feats!r} and target = {targs!r} name {len(feats)} and "
                        f"{len(targs)} column(s); X has {x.shape[1]} and y {y.shape[1]}")
    frame = pd.DataFrame(np.concatenate([x, y], axis=1), columns=[*feats, *targs])
    if len(set(frame.columns)) != len(frame.columns):
        raise DataError(f"features = {feats!r} and target = {targs!r} repeat a name")
    return frame, feats, targs


def load_samples(cfg: DataConfig, *, frame: pd.DataFrame | None = None) -> Samples:
    """``x, y, features, targets, d``: d is (n, k) dy/dfeature for ``cfg.derivatives``, or None.

    ``frame`` holds in-memory samples (see :func:`memory_frame`), read as ``kind = "file"``
    reads its file: ``[data] features``/``target``/``derivatives`` pick the columns.
    """
    if frame is not None:
        columns = [c.lstrip("-") for c in cfg.derivatives.values()]
        x, y, features, targets = table_arrays(frame, features=cfg.features, target=cfg.target,
                                               source=MEMORY_SOURCE, exclude=columns)
        return x, y, features, targets, derivative_columns(frame, cfg.derivatives, features,
                                                           MEMORY_SOURCE)
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
