"""The lecture's target functions: cos (default), sin, exp and a user polynomial.

>>> x, y = sample_function("cos", n=5, sampling="grid", seed=0)
>>> x.shape, y.shape
((5, 1), (5, 1))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from nnfin.errors import ConfigError, one_of

# name -> (function, default low, default high)
TARGETS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float, float]] = {
    "cos": (np.cos, -0.5 * math.pi, 1.5 * math.pi),
    "sin": (np.sin, -0.5 * math.pi, 1.5 * math.pi),
    "exp": (np.exp, -1.0, 1.0),
}


# float64 values per sample at the peak of sample_function: x, the draws, their sorted copy, y, noise
VALUES_PER_SAMPLE = 6


def check_memory(n: int, *, row_bytes: int = 0, field: str = "[data] n") -> int:
    """Refuse ``n`` samples of a built-in target that cannot fit in memory; return the bytes.

    ``row_bytes`` raises the per-sample bytes to a caller's own need (the data pipeline).

    >>> check_memory(1000)
    48000
    """
    from nnfin.memory import format_count, require

    per_row = max(VALUES_PER_SAMPLE * 8, row_bytes)
    require(field, n, n * per_row, "the data",
            detail=f"{format_count(n)} rows x {per_row} bytes: x, y and the intermediate arrays, float64")
    return n * per_row


def sample_function(
    kind: str,
    *,
    n: int,
    low: float | None = None,
    high: float | None = None,
    sampling: str = "uniform",
    noise: float = 0.0,
    coefficients: Sequence[float] = (0.0, 1.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` points of a built-in target as float64 arrays ``x, y`` of shape (n, 1).

    ``sampling="grid"`` is ``np.linspace(low, high, n)`` (the lecture's data); ``"uniform"``
    draws x uniformly with a seeded generator. Gaussian noise of std ``noise`` is added to y.
    """
    if kind == "polynomial":
        coef = np.asarray(coefficients, dtype=np.float64)
        if coef.size == 0:
            raise ConfigError("[data] coefficients = [] must list at least one coefficient")

        def fn(x: np.ndarray) -> np.ndarray:
            return np.polynomial.polynomial.polyval(x, coef)

        lo_default, hi_default = TARGETS["cos"][1:]
    elif kind in TARGETS:
        fn, lo_default, hi_default = TARGETS[kind]
    else:
        raise ConfigError(f"[data] kind = {kind!r} is unknown; {one_of(kind, [*TARGETS, 'polynomial'])}")
    lo = lo_default if low is None else low
    hi = hi_default if high is None else high
    if not lo < hi:
        raise ConfigError(f"[data] low = {lo!r} must be below high = {hi!r}")
    check_memory(n)
    rng = np.random.default_rng(seed)
    x = np.linspace(lo, hi, n) if sampling == "grid" else np.sort(rng.uniform(lo, hi, n))
    y = fn(x)
    if noise > 0:
        y = y + rng.normal(0.0, noise, size=n)
    return x.reshape(-1, 1), y.reshape(-1, 1)
