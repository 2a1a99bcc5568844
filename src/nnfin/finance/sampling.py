"""Seeded sampling of parameter boxes: Latin hypercube or plain uniform.

A *range* maps a column name to ``(low, high)``. :func:`sample` draws ``n`` points in
the box, one column per name, in the order given.

>>> cols = sample({"tau": (0.2, 1.1), "sigma": (0.01, 1.0)}, n=4, seed=0)
>>> sorted(cols), cols["tau"].shape
(['sigma', 'tau'], (4,))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.stats import qmc

from nnfin.errors import ConfigError, one_of

Sampler = Literal["lhs", "uniform"]
SAMPLERS: tuple[str, ...] = ("lhs", "uniform")


def check_n(n: object) -> int:
    """Return ``n`` as an int >= 1, or raise a one-line :class:`ConfigError`."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ConfigError(f"n = {n!r} must be a whole number >= 1")
    if n <= 0:
        raise ConfigError(f"n = {n!r} must be >= 1")
    return int(n)


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int >= 0, or raise a one-line :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed = {seed!r} must be a whole number >= 0")
    return int(seed)


def check_sampler(sampler: object) -> str:
    """Return the sampler name, or raise naming the valid choices."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler = {sampler!r}: {one_of(str(sampler), SAMPLERS)}")
    return str(sampler)


def as_interval(name: str, value: object) -> tuple[float, float]:
    """``(low, high)`` as floats with ``low < high``, both finite."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(
            f"ranges[{name!r}] = {value!r} must be a pair of numbers (low, high)"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"ranges[{name!r}] = {(low, high)!r} must be finite")
    if not low < high:
        raise ConfigError(f"ranges[{name!r}] = {(low, high)!r}: low must be below high")
    return low, high


def unit_sample(d: int, *, n: int, seed: int = 0, sampler: Sampler = "lhs") -> np.ndarray:
    """``n`` points in ``[0, 1)^d``, reproducible from ``seed``.

    >>> unit_sample(3, n=5, seed=1).shape
    (5, 3)
    """
    n = check_n(n)
    rng = np.random.default_rng(check_seed(seed))
    if check_sampler(sampler) == "lhs":
        return qmc.LatinHypercube(d=d, rng=rng).random(n)
    return rng.random((n, d))


def sample(
    ranges: Mapping[str, Sequence[float]],
    *,
    n: int,
    seed: int = 0,
    sampler: Sampler = "lhs",
) -> dict[str, np.ndarray]:
    """Draw ``n`` float64 points in the box ``ranges`` (column name -> ``(low, high)``).

    Each column is scaled from the unit hypercube: ``low + u * (high - low)``.

    >>> x = sample({"r": (0.02, 0.1)}, n=3, seed=0, sampler="uniform")["r"]
    >>> bool(((0.02 <= x) & (x < 0.1)).all())
    True
    """
    names = list(ranges)
    bounds = [as_interval(name, ranges[name]) for name in names]
    u = unit_sample(len(names), n=n, seed=seed, sampler=sampler)
    out: dict[str, np.ndarray] = {}
    for j, (name, (low, high)) in enumerate(zip(names, bounds, strict=True)):
        out[name] = low + u[:, j] * (high - low)
    return out
