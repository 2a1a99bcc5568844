"""The grammar of ``[tune.space]``: entries parsed into typed parameters (no config needed).

Each entry maps a dotted config key to its candidates: a list (categorical, any TOML values),
``{low, high, log}`` (a float range) or ``{low, high, step}`` (an integer range). Which keys
exist and whether a range is integer or float comes from the config's schema, passed in as
``keys`` (:func:`nnfin.config.tunable_keys`), so the config validates a space without
importing the search. Using a space (grid points, Optuna suggestions, applying values to a
config) is :mod:`nnfin.tune.space`.

>>> [p.name for p in parse_space({"optim.lr": {"low": 1e-4, "high": 0.1, "log": True}},
...                              {"optim.lr": "float"})]
['optim.lr']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nnfin.errors import did_you_mean

FIXED_SECTIONS = ("data", "run", "tune")  # not tunable: the folds and the output are fixed
EXPANDED = ("model.width", "model.layers")  # -> model.neurons = [width] * layers
RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``; lists and tables are stored as JSON strings (Optuna needs scalars)."""

    name: str
    choices: tuple[Any, ...]

    @property
    def encoded(self) -> tuple[Any, ...]:
        return tuple(encode(c) for c in self.choices)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if any(isinstance(c, (list, dict)) for c in self.choices) else value


@dataclass(frozen=True)
class Range:
    """``low <= value <= high``: integers (``step``) or floats (``log`` and/or ``step``)."""

    name: str
    low: float
    high: float
    integer: bool
    log: bool = False
    step: float | None = None

    def decode(self, value: Any) -> Any:
        return int(value) if self.integer else float(value)


Param = Categorical | Range


def encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


# ------------------------------------------------------------------------------- parsing


def _flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & RANGE_KEYS and "." not in name:
            out.update(_flatten(value, name + "."))  # [tune.space.optim] lr = ... is "optim.lr"
        else:
            out[name] = value
    return out


def parse_space(space: dict[str, Any], keys: dict[str, str]) -> list[Param]:
    """Check the shape of every entry and the names; raise ``ValueError`` naming the entry.

    ``keys`` maps the tunable dotted keys to ``"int"``, ``"float"`` or ``"other"``
    (:func:`nnfin.config.tunable_keys`).
    """
    if not isinstance(space, dict):
        raise ValueError(f"space = {space!r} must be a table of dotted keys")
    params: list[Param] = []
    for name, value in _flatten(space).items():
        where = f"space {name!r} = {value!r}"
        section = name.split(".")[0]
        if section in FIXED_SECTIONS:
            raise ValueError(f"space {name!r}: [{section}] cannot be tuned (the folds and the output "
                             "stay fixed); tune model, optim, penalty, train or early_stopping keys")
        if name not in keys:
            raise ValueError(f"space {name!r} is not a config key{did_you_mean(name, keys)}")
        params.append(_parse_entry(name, value, keys[name], where))
    names = {p.name for p in params}
    if "model.neurons" in names and names & set(EXPANDED):
        raise ValueError("space: give either 'model.neurons' or 'model.width'/'model.layers', not both")
    return params


def _parse_entry(name: str, value: Any, kind: str, where: str) -> Param:
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: an empty list has nothing to try; give at least one value")
        seen = [encode(v) for v in value]
        if len(set(map(repr, seen))) != len(seen):
            raise ValueError(f"{where}: the list repeats a value")
        return Categorical(name, tuple(value))
    if not isinstance(value, dict):
        raise ValueError(f"{where}: give a list of values or a range {{low = ..., high = ...}}")
    unknown = sorted(set(value) - RANGE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown range key {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], sorted(RANGE_KEYS))} (allowed: low, high, log, step)")
    if "low" not in value or "high" not in value:
        raise ValueError(f"{where}: a range needs both low and high")
    if kind == "other":
        raise ValueError(f"{where}: {name!r} is not numeric; give a list of values")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    for key, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{where}: {key} = {v!r} must be a finite number")
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log = {log!r} must be true or false")
    if not low < high:
        raise ValueError(f"{where}: low = {low!r} must be below high = {high!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got low = {low!r}")
    integer = kind == "int"
    if integer:
        if not (float(low).is_integer() and float(high).is_integer()):
            raise ValueError(f"{where}: {name!r} is an integer; low and high must be integers")
        step = 1 if step is None else step
        if not float(step).is_integer() or step < 1:
            raise ValueError(f"{where}: step = {step!r} must be an integer >= 1")
    if step is not None and (step <= 0 or (log and not integer)):
        raise ValueError(f"{where}: step = {step!r} must be > 0 and cannot be combined with log")
    if integer and log and step != 1:
        raise ValueError(f"{where}: an integer log range takes no step")
    return Range(name, int(low) if integer else float(low), int(high) if integer else float(high),
                 integer, log, None if step is None else (int(step) if integer else float(step)))
