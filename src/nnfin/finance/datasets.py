"""Finance datasets for surrogate training (Liu, Oosterlee & Bohte, 2019, Risks 7(1):16).

Kinds (prices are in units of the strike, ``K = 1``):

* ``black-scholes``     inputs ``moneyness = S0/K, tau, r, sigma`` -> ``price = V/K``;
  optional Greeks columns ``delta, gamma, vega, theta, rho`` (``greeks=True``).
* ``implied-vol``       the inverse problem: inputs ``moneyness, tau, r`` and the
  "gradient-squash" input ``log_time_value = log(V~/K)``, ``V~ = V - max(S0 - K e^{-r tau}, 0)``
  -> ``sigma``. Samples with ``V~ < min_time_value`` (``1e-7``) are dropped.
* ``implied-vol-plain`` the same rows, with the plain input ``price = V/K`` instead.
* ``heston``            inputs ``moneyness, tau, r, rho, kappa, vbar, gamma, v0`` -> ``price``
  by the COS method (options ``N = 1500``, ``L = 50``); optional derivative columns
  ``dV_dmoneyness, dV_dtau, ..., dV_dv0`` (``greeks=True``): the exact derivatives of the COS
  price by autograd, the labels of differential training.

>>> df, meta = generate("black-scholes", n=8, seed=1, greeks=True)
>>> list(df.columns)[:5], meta["features"], meta["targets"]
(['moneyness', 'tau', 'r', 'sigma', 'price'], ['moneyness', 'tau', 'r', 'sigma'], ['price'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from nnfin.errors import ConfigError, did_you_mean, one_of
from nnfin.finance.black_scholes import GREEKS, bs_greeks, bs_price, bs_time_value, check_option
from nnfin.finance.heston import (
    DEFAULT_L,
    DEFAULT_N,
    HESTON_INPUTS,
    cos_memory_check,
    default_chunk,
    heston_cos_price,
    heston_cos_sensitivities,
)
from nnfin.finance.sampling import as_interval, check_n, check_sampler, check_seed, sample
from nnfin.version import __version__

GENERATOR_VERSION = 1
Range = tuple[float, float]

# Liu, Oosterlee & Bohte (2019), Black–Scholes experiments: the wide ranges the BS-ANN
# is trained on and the narrower ranges inside them it is tested on.
BS_WIDE: dict[str, Range] = {
    "moneyness": (0.4, 1.6), "tau": (0.2, 1.1), "r": (0.02, 0.1), "sigma": (0.01, 1.0),
}
BS_NARROW: dict[str, Range] = {
    "moneyness": (0.5, 1.5), "tau": (0.3, 0.95), "r": (0.03, 0.08), "sigma": (0.02, 0.9),
}
# Liu, Oosterlee & Bohte (2019), Heston experiments: the table of Heston-ANN input
# ranges (moneyness m = S0/K, time to maturity tau in years, risk-free rate r,
# correlation rho, reversion speed kappa, long average variance vbar, volatility of
# volatility gamma, initial variance v0), sampled there with Latin hypercube sampling
# and priced by COS with N = 1500, L = 50.
HESTON_WIDE: dict[str, Range] = {
    "moneyness": (0.6, 1.4), "tau": (0.1, 1.4), "r": (0.0, 0.1), "rho": (-0.95, 0.0),
    "kappa": (0.0, 2.0), "vbar": (0.0, 0.5), "gamma": (0.0, 0.5), "v0": (0.05, 0.5),
}

# name -> (what it is, rule) for the sampled columns; rules: ">0", ">=0", "corr", "any"
PARAMETERS: dict[str, tuple[str, str]] = {
    "moneyness": ("moneyness S0/K", ">0"), "tau": ("maturity", ">0"), "r": ("rate", "any"),
    "sigma": ("volatility", ">0"), "rho": ("correlation", "corr"),
    "kappa": ("reversion speed", ">=0"), "vbar": ("long-run variance", ">=0"),
    "gamma": ("vol of vol", ">=0"), "v0": ("initial variance", ">0"),
}


@dataclass(frozen=True)
class KindSpec:
    """What a kind samples, which columns feed the network and which it predicts."""

    name: str
    description: str
    presets: dict[str, dict[str, Range]]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)  # kind option -> default

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.presets["wide"])


_IV_OPTIONS = {"min_time_value": 1e-7}
SPECS: dict[str, KindSpec] = {
    spec.name: spec for spec in (
        KindSpec("black-scholes", "Black–Scholes price V/K (optional Greeks)",
                 {"wide": BS_WIDE, "narrow": BS_NARROW},
                 ("moneyness", "tau", "r", "sigma"), ("price",)),
        KindSpec("implied-vol", "implied volatility from log time value log(V~/K)",
                 {"wide": BS_WIDE, "narrow": BS_NARROW},
                 ("moneyness", "tau", "r", "log_time_value"), ("sigma",), _IV_OPTIONS),
        KindSpec("implied-vol-plain", "implied volatility from the plain price V/K",
                 {"wide": BS_WIDE, "narrow": BS_NARROW},
                 ("moneyness", "tau", "r", "price"), ("sigma",), _IV_OPTIONS),
        KindSpec("heston", "Heston price V/K by the COS method",
                 {"wide": HESTON_WIDE},
                 ("moneyness", "tau", "r", "rho", "kappa", "vbar", "gamma", "v0"), ("price",),
                 {"N": DEFAULT_N, "L": DEFAULT_L, "chunk": None, "device": None}),
    )
}
KINDS: tuple[str, ...] = tuple(SPECS)
FEATURES: dict[str, list[str]] = {k: list(s.features) for k, s in SPECS.items()}
TARGETS: dict[str, list[str]] = {k: list(s.targets) for k, s in SPECS.items()}


def get_spec(kind: object) -> KindSpec:
    """The :class:`KindSpec` of ``kind``, or a one-line error naming the valid kinds.

    >>> get_spec("heston").targets
    ('price',)
    """
    if kind not in SPECS:
        raise ConfigError(f"kind = {kind!r}: {one_of(str(kind), KINDS)}")
    return SPECS[str(kind)]


def _check_domain(name: str, interval: Range) -> Range:
    low, high = interval
    label, rule = PARAMETERS[name]
    if rule == ">0" and low <= 0:
        raise ConfigError(f"ranges[{name!r}] = {interval!r}: {label} must be > 0")
    if rule == ">=0" and low < 0:
        raise ConfigError(f"ranges[{name!r}] = {interval!r}: {label} must be >= 0")
    if rule == "corr" and (low < -1 or high > 1):
        raise ConfigError(f"ranges[{name!r}] = {interval!r}: {label} must lie in [-1, 1]")
    return interval


def _unknown_column(spec: KindSpec, name: object) -> ConfigError:
    return ConfigError(
        f"ranges: unknown column {name!r} for kind {spec.name!r}; choose one of "
        f"{', '.join(spec.params)}{did_you_mean(str(name), spec.params)}"
    )


def resolve_ranges(
    kind: str,
    ranges: str | Mapping[str, Any] = "wide",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Range], str]:
    """Full, validated ranges of ``kind`` and the preset they came from.

    ``ranges`` is a preset name (``"wide"``, ``"narrow"``) or a mapping of some columns
    to ``(low, high)`` on top of ``"wide"``; ``overrides`` replaces single columns.

    >>> r, preset = resolve_ranges("black-scholes", "narrow", {"sigma": (0.1, 0.5)})
    >>> r["sigma"], r["tau"], preset
    ((0.1, 0.5), (0.3, 0.95), 'narrow')
    """
    spec = get_spec(kind)
    if isinstance(ranges, str):
        if ranges not in spec.presets:
            raise ConfigError(
                f"ranges = {ranges!r} for kind {kind!r}: {one_of(ranges, spec.presets)}"
            )
        preset, base = ranges, dict(spec.presets[ranges])
    elif isinstance(ranges, Mapping):
        preset, base = "custom", dict(spec.presets["wide"])
        overrides = {**ranges, **(overrides or {})}
    else:
        raise ConfigError(f"ranges = {ranges!r} must be a preset name or a mapping")
    for name, value in (overrides or {}).items():
        if name not in base:
            raise _unknown_column(spec, name)
        base[name] = value
    out = {name: _check_domain(name, as_interval(name, base[name])) for name in spec.params}
    return out, preset


def parse_range_assignment(text: str) -> tuple[str, Range]:
    """Parse ``"name=low,high"`` (the CLI's ``--set``) into ``(name, (low, high))``.

    >>> parse_range_assignment("sigma=0.1,0.5")
    ('sigma', (0.1, 0.5))
    """
    name, sep, rest = str(text).partition("=")
    parts = rest.split(",")
    try:
        if not sep or not name.strip() or len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--set {text!r}: expected name=low,high, e.g. sigma=0.1,0.5") from None
    return name.strip(), (low, high)


def _kind_options(spec: KindSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(spec.options)
    lookup = {k.lower(): k for k in opts}
    for key, value in given.items():
        canon = lookup.get(str(key).lower())
        if canon is None:
            allowed = ", ".join(opts) or "none"
            raise ConfigError(
                f"options: unknown option {key!r} for kind {spec.name!r} (allowed: {allowed})"
                f"{did_you_mean(str(key), opts)}"
            )
        opts[canon] = value
    if "N" in opts:
        n_terms = opts["N"]
        if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 2:
            raise ConfigError(f"options: N = {n_terms!r} must be a whole number >= 2")
        big_l = opts["L"]
        if isinstance(big_l, bool) or not isinstance(big_l, int | float) or not big_l > 0:
            raise ConfigError(f"options: L = {big_l!r} must be a number > 0")
    if "min_time_value" in opts:
        mtv = opts["min_time_value"]
        if isinstance(mtv, bool) or not isinstance(mtv, int | float) or not mtv > 0:
            raise ConfigError(f"options: min_time_value = {mtv!r} must be a number > 0")
    return opts


# float64 values alive per row at the peak of generate() (sampled columns, the sampler's draws,
# labels and their intermediates, the frame): about 1.3x the measured peaks of 17-24 (Black-Scholes,
# implied vol), 36 (with Greeks) and 43 (Heston, without its COS work)
VALUES_PER_ROW = {"black-scholes": 32, "implied-vol": 32, "implied-vol-plain": 32, "heston": 56}
VALUES_PER_ROW_GREEKS = 48
# the heston kind with its 8 derivative columns (and their copies on the way into the frame)
VALUES_PER_ROW_HESTON_GREEKS = 80
# name of the column that holds dV/d<input> for the heston kind (greeks=True)
HESTON_GREEKS: tuple[str, ...] = tuple(f"dV_d{name}" for name in HESTON_INPUTS)
GREEKS_COLUMNS: dict[str, tuple[str, ...]] = {"black-scholes": GREEKS, "heston": HESTON_GREEKS}
_GENERATE_KEYS = ("ranges", "overrides", "sampler", "option")


def check_memory(kind: str, n: int, options: Mapping[str, Any] | None = None, *, greeks: bool = False,
                 row_bytes: int = 0, fields: Mapping[str, str] | None = None) -> int:
    """Refuse a :func:`generate` call whose arrays cannot fit in memory; return its peak bytes.

    Costs no allocation: the estimate is ``n`` rows x the float64 values alive per row
    (:data:`VALUES_PER_ROW`), plus the COS work of one Heston chunk. ``row_bytes`` raises the
    per-row bytes to a caller's own need (the training data pipeline); ``fields`` renames
    ``n``, ``N`` and ``chunk`` in the message (``{"n": "--n", "N": "--cos-n"}``). ``options``
    are the keyword options of :func:`generate` (``N``, ``chunk``, ``sampler``, ...).

    >>> check_memory("black-scholes", 1000) < 2**20
    True
    """
    from nnfin.memory import format_bytes, format_count, require

    names = {"n": "n", "N": "N", "chunk": "chunk", **(fields or {})}
    spec = get_spec(kind)
    n = check_n(n)
    opts = _kind_options(spec, {k: v for k, v in (options or {}).items() if k not in _GENERATE_KEYS})
    work = 0
    with_greeks = greeks and spec.name in GREEKS_COLUMNS
    if "N" in opts:
        n_terms, chunk = int(opts["N"]), opts["chunk"]
        rows = min(n, chunk or default_chunk(n_terms, gradient=with_greeks))
        work = cos_memory_check(n_terms, rows, device=opts["device"], field=names["N"],
                                chunk_field=names["chunk"], chunk=chunk, gradient=with_greeks)
    values = VALUES_PER_ROW[spec.name]
    if with_greeks:
        values = VALUES_PER_ROW_HESTON_GREEKS if spec.name == "heston" else VALUES_PER_ROW_GREEKS
    per_row = max(values * 8, row_bytes)
    total = n * per_row + work
    columns = len(spec.params) + len(spec.targets) + (len(GREEKS_COLUMNS[spec.name])
                                                      if with_greeks else 0)
    cos = f" + {format_bytes(work)} of COS work" if work else ""
    require(names["n"], n, total, "the data",
            detail=f"{format_count(n)} rows x {per_row} bytes: {columns} float64 columns and the "
                   f"intermediate arrays{cos}")
    return total


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def generate(
    kind: str,
    *,
    n: int,
    seed: int = 0,
    ranges: str | Mapping[str, Any] = "wide",
    overrides: Mapping[str, Any] | None = None,
    sampler: str = "lhs",
    greeks: bool = False,
    option: str = "call",
    **kind_options: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Sample ``n`` parameter sets of ``kind`` and label them; returns ``(frame, meta)``.

    ``meta`` records everything needed to regenerate the frame (kind, ranges, n, seed,
    sampler, option, kind options, generator version) plus its ``features``, ``targets``
    and ``columns``. ``implied-vol`` kinds may return fewer than ``n`` rows (see
    ``meta["rows"]`` and ``meta["dropped"]``).

    >>> df, meta = generate("heston", n=4, seed=0, N=256, L=12)
    >>> len(df), meta["N"], meta["targets"]
    (4, 256, ['price'])
    """
    spec = get_spec(kind)
    n, seed = check_n(n), check_seed(seed)
    sampler, option = check_sampler(sampler), check_option(option)
    if greeks and spec.name not in GREEKS_COLUMNS:
        raise ConfigError(f"greeks = True is available for kinds {', '.join(map(repr, GREEKS_COLUMNS))}"
                          f" only, not {kind!r}")
    box, preset = resolve_ranges(spec.name, ranges, overrides)
    opts = _kind_options(spec, kind_options)
    check_memory(spec.name, n, kind_options, greeks=greeks)
    cols = sample(box, n=n, seed=seed, sampler=sampler)  # type: ignore[arg-type]
    frame = pd.DataFrame(cols)
    m, tau, r = _t(cols["moneyness"]), _t(cols["tau"]), _t(cols["r"])
    meta_extra: dict[str, Any] = {}
    if spec.name == "black-scholes":
        sigma = _t(cols["sigma"])
        frame["price"] = bs_price(m, tau, r, sigma, option).numpy()  # type: ignore[arg-type]
        if greeks:
            for name, values in bs_greeks(m, tau, r, sigma, option).items():  # type: ignore[arg-type]
                frame[name] = values.numpy()
    elif spec.name.startswith("implied-vol"):
        sigma = _t(cols["sigma"])
        tv = bs_time_value(m, tau, r, sigma).numpy()
        frame["price"] = bs_price(m, tau, r, sigma, option).numpy()  # type: ignore[arg-type]
        frame["time_value"] = tv
        keep = tv >= opts["min_time_value"]
        frame = frame.loc[keep].reset_index(drop=True)
        frame["log_time_value"] = np.log(frame["time_value"].to_numpy())
        frame = frame[["moneyness", "tau", "r", "price", "time_value", "log_time_value",
                       "sigma"]]
        meta_extra["min_time_value"] = float(opts["min_time_value"])
    else:
        params = {k: _t(cols[k]) for k in ("rho", "kappa", "vbar", "gamma", "v0")}
        cos = {"option": option, "n_terms": opts["N"], "big_l": float(opts["L"]),
               "chunk": opts["chunk"], "device": opts["device"]}
        if greeks:
            price, sens = heston_cos_sensitivities(m, tau, r, **params, **cos)  # type: ignore[arg-type]
        else:
            price, sens = heston_cos_price(m, tau, r, **params, **cos), {}  # type: ignore[arg-type]
        frame["price"] = price.numpy()
        for name, column in zip(HESTON_INPUTS, HESTON_GREEKS, strict=True):
            if name in sens:
                frame[column] = sens[name].numpy()
        meta_extra.update(N=int(opts["N"]), L=float(opts["L"]))
    meta: dict[str, Any] = {
        "kind": spec.name, "n": n, "rows": len(frame), "dropped": n - len(frame),
        "seed": seed, "sampler": sampler, "ranges_preset": preset,
        "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in box.items()},
        "option": option, "greeks": bool(greeks), **meta_extra,
        "features": list(spec.features), "targets": list(spec.targets),
        "columns": [str(c) for c in frame.columns],
        "units": "prices and Greeks in units of the strike (K = 1)",
        "generator": "nnfin.finance", "generator_version": GENERATOR_VERSION,
        "nnfin_version": __version__,
    }
    if greeks:
        meta["greeks_columns"] = list(GREEKS_COLUMNS[spec.name])
    if not np.isfinite(frame.to_numpy(dtype=np.float64)).all():  # pragma: no cover
        raise ConfigError(f"kind = {kind!r}: non-finite values generated for ranges {box!r}")
    return frame, meta


def describe_kinds() -> list[dict[str, Any]]:
    """One row per kind: name, description, features, targets, presets, options.

    >>> [row["kind"] for row in describe_kinds()][:2]
    ['black-scholes', 'implied-vol']
    """
    return [
        {"kind": s.name, "description": s.description, "features": list(s.features),
         "targets": list(s.targets), "presets": list(s.presets),
         "options": {k: v for k, v in s.options.items() if v is not None}}
        for s in SPECS.values()
    ]


__all__ = [
    "FEATURES", "GENERATOR_VERSION", "KINDS", "SPECS", "TARGETS", "KindSpec",
    "describe_kinds", "generate", "get_spec", "parse_range_assignment",
    "resolve_ranges",
]
