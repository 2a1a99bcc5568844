"""Search spaces: ``[tune.space]`` entries parsed into typed parameters and applied to a config.

Each entry maps a dotted config key to its candidates:

```toml
[tune.space]
"model.neurons" = [[6, 6], [16, 16], [32, 32]]      # a list: categorical (any TOML values)
"optim.lr" = {low = 1e-4, high = 1e-1, log = true}  # a float range (log-uniform here)
"train.batch_size" = {low = 16, high = 128, step = 16}   # an integer range (step defaults to 1)
"model.width" = [8, 16, 32]                         # width and layers expand into
"model.layers" = {low = 1, high = 3}                #   model.neurons = [width] * layers
```

Whether a range is an integer or a float range follows the key's type in the config (so
``"penalty.l2" = {low = 0, high = 1}`` is a float range). ``model.width`` / ``model.layers``
without the other take it from ``model.neurons`` of the base config. Tables may also nest:
``[tune.space.optim] lr = {...}`` is ``"optim.lr"``. Grid search needs lists or stepped ranges.

>>> params = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True},
...                       "model.width": [8, 16], "model.layers": [1, 2]})
>>> [p.name for p in params]
['optim.lr', 'model.width', 'model.layers']
>>> apply_params(Config(), {"model.width": 8, "model.layers": 2}).model.neurons
[8, 8]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nnfin.config import Config, load_config
from nnfin.errors import ConfigError, did_you_mean

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
        return tuple(_encode(c) for c in self.choices)

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


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


# ------------------------------------------------------------------------------- parsing


def tunable_keys() -> dict[str, str]:
    """``{"optim.lr": "float", "model.neurons": "other", ...}``: keys a search may vary."""
    keys: dict[str, str] = {}
    for section, field in Config.model_fields.items():
        if section in FIXED_SECTIONS:
            continue
        model = field.annotation
        for key, sub in model.model_fields.items():  # type: ignore[union-attr]
            ann = str(sub.annotation)
            kind = "int" if sub.annotation is int or ann == "int | None" else \
                "float" if sub.annotation is float or ann == "float | None" else "other"
            keys[f"{section}.{key}"] = kind
    keys.update({"model.width": "int", "model.layers": "int"})
    return keys


def _flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & RANGE_KEYS and "." not in name:
            out.update(_flatten(value, name + "."))  # [tune.space.optim] lr = ... is "optim.lr"
        else:
            out[name] = value
    return out


def parse_space(space: dict[str, Any]) -> list[Param]:
    """Check the shape of every entry and the names; raise ``ValueError`` naming the entry."""
    if not isinstance(space, dict):
        raise ValueError(f"space = {space!r} must be a table of dotted keys")
    keys = tunable_keys()
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
        seen = [_encode(v) for v in value]
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


# ------------------------------------------------------------------------ using a space


def grid_values(param: Param) -> list[Any]:
    """The points of ``param`` for grid search (encoded); continuous ranges are refused."""
    if isinstance(param, Categorical):
        return list(param.encoded)
    if param.step is None or (param.log and not param.integer):
        raise ConfigError(f"[tune] space {param.name!r}: grid search needs a list of values or a range "
                          "with a step (or strategy = 'random' / 'bayes')")
    n = math.floor((param.high - param.low) / param.step + 1e-9) + 1
    return [param.decode(param.low + i * param.step) for i in range(n)]


def grid_size(params: list[Param]) -> int:
    return math.prod(len(grid_values(p)) for p in params)


def suggest(trial: Any, params: list[Param]) -> dict[str, Any]:
    """Ask an Optuna trial for one value per parameter; returns decoded values."""
    out: dict[str, Any] = {}
    for p in params:
        if isinstance(p, Categorical):
            value = trial.suggest_categorical(p.name, list(p.encoded))
        elif p.integer:
            value = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        out[p.name] = p.decode(value)
    return out


def decode(params: list[Param], raw: dict[str, Any]) -> dict[str, Any]:
    """Decode stored Optuna params (JSON strings back to lists)."""
    by_name = {p.name: p for p in params}
    return {k: by_name[k].decode(v) if k in by_name else v for k, v in raw.items()}


def apply_params(base: Config, values: dict[str, Any]) -> Config:
    """``base`` with ``values`` set (``model.width``/``model.layers`` expand into neurons)."""
    raw = base.to_dict()
    values = dict(values)
    if "model.width" in values or "model.layers" in values:
        neurons = base.model.neurons or [1]
        width = values.pop("model.width", neurons[0])
        layers = values.pop("model.layers", len(neurons))
        values["model.neurons"] = [int(width)] * int(layers)
    for name, value in values.items():
        section, key = name.split(".", 1)
        raw.setdefault(section, {})[key] = value
    try:
        return load_config(raw)
    except ConfigError as exc:
        shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        raise ConfigError(f"[tune] space gives {shown}, which the config refuses: {exc}") from None


def check_values(base: Config, params: list[Param]) -> None:
    """Fail before any training when a candidate value is one the config would refuse."""
    for p in params:
        values = list(p.choices) if isinstance(p, Categorical) else [p.low, p.high]
        for v in values:
            try:
                apply_params(base, {p.name: p.decode(_encode(v)) if isinstance(p, Categorical) else v})
            except ConfigError as exc:
                inner = str(exc).split("which the config refuses: ", 1)[-1]
                raise ConfigError(f"[tune] space {p.name!r}: the value {v!r} is refused: {inner}") from None
