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

import math
from typing import Any

from nnfin.config import Config, load_config, tunable_keys
from nnfin.errors import ConfigError
from nnfin.searchspace import EXPANDED, FIXED_SECTIONS, Categorical, Param, Range, encode
from nnfin.searchspace import parse_space as _parse_space

__all__ = ["EXPANDED", "FIXED_SECTIONS", "Categorical", "Param", "Range", "apply_params", "check_values",
           "decode", "grid_size", "grid_values", "parse_space", "suggest", "tunable_keys"]


def parse_space(space: dict[str, Any]) -> list[Param]:
    """The parameters of a ``[tune.space]`` table, checked against the config's keys."""
    return _parse_space(space, tunable_keys())



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
                apply_params(base, {p.name: p.decode(encode(v)) if isinstance(p, Categorical) else v})
            except ConfigError as exc:
                inner = str(exc).split("which the config refuses: ", 1)[-1]
                raise ConfigError(f"[tune] space {p.name!r}: the value {v!r} is refused: {inner}") from None
