"""The evaluation report of a finance run, with the metrics of Liu, Oosterlee & Bohte (2019).

:func:`evaluate` scores a trained surrogate on three splits:

* ``train``       - the run's training rows;
* ``test-wide``   - a fresh dataset of the run's kind from the ``wide`` range preset,
* ``test-narrow`` - one from the ``narrow`` preset (kinds without one, e.g. ``heston``, skip it),

both with ``n`` samples (default 20,000), drawn with seeds other than the run's (``seed`` and
``seed + 1``, default ``[data] seed + 1000``), the run's sampler, option type and kind options.

Metrics (:func:`finance_metrics`, in the data's units): MSE, RMSE, MAE, R², the maximum absolute
error and ``MAPE = mean(|y - y_hat| / |y|)`` as a fraction (not in percent) over the rows with
``|y| > mape_cutoff`` only (default ``1e-3``): deep out-of-the-money prices near zero would
otherwise dominate it; ``n_mape`` says how many rows counted.

For ``black-scholes`` price runs the Greeks of the surrogate (autograd through the data scaling,
see :mod:`nnfin.finance.surrogate`) are scored against the analytic ones with the same metrics.
For ``implied-vol`` runs the network is compared with the vectorised Newton solver and brentq on
the paper's Table 8 options (:mod:`nnfin.finance.iv_compare`).

For price surrogates of a kind in :data:`HEDGE_MARKETS` (``black-scholes``: GBM paths and the
closed forms; ``heston``: full-truncation Euler paths, the COS price and its autograd delta) a
hedging test (:mod:`nnfin.finance.hedging`): a short book of calls (:data:`HEDGE`) is
delta-hedged every day along seeded simulated paths with the network's delta and with the exact
delta; the P&L mean and
standard deviation of both, their ratio, and those of the unhedged book.

:func:`write_report` writes ``report/metrics.csv``, ``report/iv_solvers.csv`` (IV runs),
``report/hedging.csv``, ``report/report.json``, ``report/error_surface.png``,
``report/greeks.png`` and ``report/hedging.png`` into the run.

>>> finance_metrics(np.array([1.0, 2.0, 1e-4]), np.array([1.1, 2.0, 2e-4]))["n_mape"]
2
>>> report = write_report(nnfin.load_run("runs/bs"))  # doctest: +SKIP
>>> report.metrics.query("quantity == 'price'")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nnfin.errors import ConfigError, DataError
from nnfin.finance.black_scholes import bs_greeks
from nnfin.finance.datasets import SPECS, generate, resolve_ranges
from nnfin.finance.surrogate import PIECEWISE_LINEAR, available_greeks, surrogate_greeks

DEFAULTS: dict[str, Any] = {"n": 20_000, "iv_n": 20_000, "mape_cutoff": 1e-3, "seed_offset": 1000,
                            "gamma_fd_step": 1e-2, "hedge_paths": 2000, "hedge_seed": 0}
# the hedging test: a short book of calls (strikes in units of the initial spot S0 = 1) hedged
# daily for half a year of its 0.9-year life, so tau stays in [0.4, 0.9] (inside both presets)
# simulated paths of the hedging test by kind: a Heston step prices every option by COS
HEDGE_PATHS: dict[str, int] = {"black-scholes": 2000, "heston": 500}
HEDGE: dict[str, Any] = {"s0": 1.0, "r": 0.05, "sigma": 0.2, "strikes": (0.9, 1.0, 1.1),
                         "maturity": 0.9, "horizon": 0.5, "steps": 126}
METRICS = ("mse", "rmse", "mae", "mape", "r2", "max_abs_error")
_GEN_KEYS = ("sampler", "option", "N", "L", "chunk", "device", "min_time_value")


@dataclass
class Report:
    """What :func:`evaluate` found; ``metrics`` has one row per (split, quantity)."""

    kind: str
    metrics: pd.DataFrame
    iv: pd.DataFrame | None = None
    hedging: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    # per split: inputs, targets, predictions (and Greeks) for the plots
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    # per hedge (exact delta, network delta, no hedge): the P&L of every path
    hedge_pnls: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def finance_metrics(y_true: np.ndarray, y_pred: np.ndarray, *,
                    mape_cutoff: float = DEFAULTS["mape_cutoff"]) -> dict[str, float]:
    """MSE, RMSE, MAE, MAPE (rows with ``|y| > mape_cutoff``), R², max abs error, n, n_mape."""
    y, p = np.asarray(y_true, dtype=np.float64).ravel(), np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise DataError(f"{len(y)} targets but {len(p)} predictions")
    err = p - y
    n = len(y)
    if n == 0:
        return {**dict.fromkeys(METRICS, math.nan), "n": 0, "n_mape": 0}
    mse = float(np.mean(err**2))
    keep = np.abs(y) > mape_cutoff
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(err))),
        "mape": float(np.mean(np.abs(err[keep]) / np.abs(y[keep]))) if keep.any() else math.nan,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 and n > 1 else math.nan,
        "max_abs_error": float(np.max(np.abs(err))), "n": n, "n_mape": int(keep.sum()),
    }


def finance_kind(run: Any) -> str:
    """The run's dataset kind, or a one-line error for runs on other data."""
    kind = run.config.data.kind
    if kind not in SPECS:
        where = f"run {str(run.dir)!r}" if run.dir is not None else "the run"
        raise ConfigError(f"{where} has [data] kind = {kind!r}; a finance report needs one of "
                          f"{', '.join(SPECS)}")
    return kind


def generation_options(run: Any) -> dict[str, Any]:
    """The run's ``[data.options]`` that fresh test sets share (sampler, option, kind options)."""
    return {k: v for k, v in run.config.data.options.items() if k in _GEN_KEYS}


def fresh_test_sets(run: Any, *, n: int = DEFAULTS["n"], seed: int | None = None
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"test-wide": (x, y), "test-narrow": (x, y)}`` in data units, freshly generated."""
    kind = finance_kind(run)
    seed = run.config.data.seed + DEFAULTS["seed_offset"] if seed is None else seed
    out = {}
    for i, preset in enumerate(("wide", "narrow")):
        if preset not in SPECS[kind].presets:
            continue
        frame, _ = generate(kind, n=n, seed=seed + i, ranges=preset, **generation_options(run))
        _check_columns(frame, run)
        out[f"test-{preset}"] = (frame[run.features].to_numpy(np.float64),
                                 frame[run.targets].to_numpy(np.float64))
    return out


def _check_columns(frame: pd.DataFrame, run: Any) -> None:
    missing = [c for c in (*run.features, *run.targets) if c not in frame.columns]
    if missing:
        raise DataError(f"the run's columns {missing!r} are not in a generated "
                        f"{run.config.data.kind!r} dataset (columns: {', '.join(frame.columns)})")


def training_rows(run: Any, trainer: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The run's training rows in data units: from ``trainer`` or regenerated from the config."""
    if trainer is not None:
        data = trainer.data
    else:
        from nnfin.data import build_data

        data = build_data(run.config.data, dtype="float64")
    x, y = data.split("train", scaled=False)
    return x.double().cpu().numpy(), y.double().cpu().numpy()


def _price_greeks_ok(run: Any, kind: str) -> bool:
    feats = set(run.features)
    return kind == "black-scholes" and run.targets == ["price"] and \
        {"moneyness", "tau", "r", "sigma"} <= feats


# float64 values kept per row of a test split (inputs, target, prediction, network and analytic
# Greeks and their intermediates), and per row of the IV comparison (options, Newton's iterates)
_REPORT_VALUES_PER_ROW = 32
_IV_VALUES_PER_ROW = 40


def check_memory(run: Any, *, n: int | None = None, iv_n: int | None = None,
                 fields: tuple[str, ...] = ("n", "iv_n", "hedge_paths"),
                 hedge_paths: int | None = None) -> int:
    """Refuse test sets (``n`` rows each) or IV options (``iv_n``) that cannot fit in memory.

    Per test set: the generator's peak, the rows kept for the metrics and plots and one forward
    pass of all rows through the network (float64, with its graph). ``fields`` names ``n`` and
    ``iv_n`` (and ``hedge_paths``) in the message (the CLI passes ``("--n", "--iv-n",
    "--hedge-paths")``). ``hedge_paths`` sizes the hedging test's paths. Returns the bytes.

    >>> check_memory(run, n=20_000)  # doctest: +SKIP
    """
    from nnfin.finance.datasets import check_memory as check_generation
    from nnfin.memory import format_count, require

    kind = finance_kind(run)
    n = DEFAULTS["n"] if n is None else n
    iv_n = DEFAULTS["iv_n"] if iv_n is None else iv_n
    hedge_paths = HEDGE_PATHS.get(kind, DEFAULTS["hedge_paths"]) if hedge_paths is None \
        else hedge_paths
    model = run.config.model
    hidden = [model.degree + 1] if model.kind == "polynomial" else list(model.neurons)
    n_in, n_out = len(run.features), len(run.targets)
    forward = (2 * sum([n_in, *hidden, n_out]) + 3 * n_in) * 8  # bytes per row, float64
    options = generation_options(run)
    generation = check_generation(kind, n, options, fields={"n": fields[0]})
    splits = sum(p in SPECS[kind].presets for p in ("wide", "narrow"))
    per_row = splits * (n_in + n_out + _REPORT_VALUES_PER_ROW) * 8 + forward
    total = generation + n * per_row
    require(fields[0], n, total, "the test sets",
            detail=f"{splits} x {format_count(n)} rows and their generation, plus the network's "
                   f"forward pass of {format_count(n)} rows")
    if kind.startswith("implied-vol"):
        iv_bytes = iv_n * (_IV_VALUES_PER_ROW * 8 + forward)
        require(fields[1], iv_n, iv_bytes, "the implied-vol comparison",
                detail=f"{format_count(iv_n)} options x {_IV_VALUES_PER_ROW * 8 + forward} bytes")
        total = max(total, iv_bytes)
    if hedge_paths and kind in HEDGE_MARKETS:
        per_path = _hedge_values_per_path() * 8 + len(HEDGE["strikes"]) * forward
        hedge_field = fields[2] if len(fields) > 2 else "hedge_paths"
        require(hedge_field, hedge_paths, hedge_paths * per_path, "the hedging test",
                detail=f"{format_count(hedge_paths)} paths x {per_path} bytes")
        total = max(total, hedge_paths * per_path)
    return total


MIN_HEDGE_PATHS = 2  # a P&L standard deviation needs two paths


def check_hedging(paths: object, seed: object, fields: tuple[str, str] = ("hedge_paths", "hedge_seed")
                  ) -> None:
    """Refuse, in one line naming the argument, a number of hedging paths that is not a whole
    number >= :data:`MIN_HEDGE_PATHS` or a seed that is not a whole number >= 0.

    >>> check_hedging(1, 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nnfin.errors.ConfigError: hedge_paths = 1 must be a whole number >= 2 (the P&L standard ...
    """
    if isinstance(paths, bool) or not isinstance(paths, int | np.integer) or paths < MIN_HEDGE_PATHS:
        raise ConfigError(f"{fields[0]} = {paths!r} must be a whole number >= {MIN_HEDGE_PATHS} "
                          "(the P&L standard deviation needs two paths)")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"{fields[1]} = {seed!r} must be a whole number >= 0")


def _hedge_values_per_path() -> int:
    """float64 values per simulated path: the spot and variance paths, their normals, and per
    option one step's inputs, Greeks and P&L work."""
    return 4 * (HEDGE["steps"] + 1) + len(HEDGE["strikes"]) * 16


def evaluate(run: Any, trainer: Any = None, *, n: int | None = None, seed: int | None = None,
             train: bool = True, greeks: bool = True, iv: bool = True, iv_n: int | None = None,
             brentq: bool = True, mape_cutoff: float | None = None, hedge: bool = True,
             hedge_paths: int | None = None, hedge_seed: int | None = None) -> Report:
    """Score ``run`` on train / test-wide / test-narrow, its Greeks, (IV runs) the solvers and
    (price runs) the hedging test.

    ``n`` sizes each test set, ``iv_n`` the Table 8 options, ``hedge_paths`` the simulated
    paths of the hedging test (defaults in :data:`DEFAULTS`); ``train = False`` skips
    regenerating the training rows of a loaded run.
    """
    kind = finance_kind(run)
    n = DEFAULTS["n"] if n is None else n
    iv_n = DEFAULTS["iv_n"] if iv_n is None else iv_n
    hedge_paths = HEDGE_PATHS.get(kind, DEFAULTS["hedge_paths"]) if hedge_paths is None \
        else hedge_paths
    hedge_seed = DEFAULTS["hedge_seed"] if hedge_seed is None else hedge_seed
    if hedge:
        check_hedging(hedge_paths, hedge_seed)
    check_memory(run, n=n, iv_n=iv_n if iv else 0, hedge_paths=hedge_paths if hedge else 0)
    cutoff = DEFAULTS["mape_cutoff"] if mape_cutoff is None else mape_cutoff
    seed = run.config.data.seed + DEFAULTS["seed_offset"] if seed is None else seed
    option = run.config.data.options.get("option", "call")
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if train:
        splits["train"] = training_rows(run, trainer)
    splits.update(fresh_test_sets(run, n=n, seed=seed))
    report = Report(kind, pd.DataFrame(), settings={
        "n_test": n, "seed_test_wide": seed, "seed_test_narrow": seed + 1, "mape_cutoff": cutoff,
        "mape": "mean(|y - y_hat| / |y|) over rows with |y| > mape_cutoff, as a fraction",
        "option": option, "target": run.targets[0], **generation_options(run)})
    if "narrow" not in SPECS[kind].presets:
        report.notes.append(f"kind {kind!r} has no narrow range preset: no test-narrow split")
    do_greeks = greeks and _price_greeks_ok(run, kind)
    activation = getattr(run.config.model, "activation", "")
    fd_step = DEFAULTS["gamma_fd_step"] if activation in PIECEWISE_LINEAR else None
    if do_greeks:
        report.settings["gamma_fd_step"] = fd_step
        report.notes.append("Greeks: autograd through the data scaling in float64; gamma is the "
                            "second derivative in moneyness")
        if fd_step is not None:
            report.notes.append(f"{activation} networks are piecewise linear: their autograd gamma "
                                f"is 0 almost everywhere; gamma_fd = central difference of the "
                                f"network delta with step {fd_step:g}")
    rows = []
    for split, (x, y) in splits.items():
        pred = run.predict(x)
        rows.append({"split": split, "quantity": run.targets[0],
                     **finance_metrics(y[:, 0], pred[:, 0], mape_cutoff=cutoff)})
        sample = {"x": x, "y": y[:, 0], "pred": pred[:, 0]}
        if do_greeks:
            cols = [x[:, run.features.index(f)] for f in ("moneyness", "tau", "r", "sigma")]
            exact = {k: v.numpy() for k, v in bs_greeks(*cols, option=option).items()}
            nn_greeks = surrogate_greeks(run, x, available_greeks(run.features), gamma_fd_step=fd_step)
            for name, values in nn_greeks.items():
                ref = exact["gamma" if name == "gamma_fd" else name]
                rows.append({"split": split, "quantity": name,
                             **finance_metrics(ref, values, mape_cutoff=cutoff)})
                sample[f"{name}_nn"], sample[f"{name}_bs"] = values, ref
        report.samples[split] = sample
    report.metrics = pd.DataFrame(rows)
    if iv and kind.startswith("implied-vol"):
        report.iv = _iv_section(run, report, iv_n, brentq)
    if hedge and kind in HEDGE_MARKETS:
        report.hedging = _hedging_section(run, report, hedge_paths, hedge_seed)
    return report


def _bs_hedge_market(run: Any, paths: int, seed: int) -> tuple[Any, Any, Any, Any, str]:
    """GBM paths under the risk-neutral drift, the book, and the closed-form price and delta."""
    from nnfin.finance.black_scholes import bs_price
    from nnfin.finance.hedging import Book, simulate_gbm

    market = simulate_gbm(HEDGE["s0"], r=HEDGE["r"], sigma=HEDGE["sigma"], horizon=HEDGE["horizon"],
                          steps=HEDGE["steps"], paths=paths, seed=seed)
    book = Book(strikes=HEDGE["strikes"], maturity=HEDGE["maturity"])

    def cols(f: pd.DataFrame) -> list[np.ndarray]:
        return [f[c].to_numpy() for c in ("moneyness", "tau", "r", "sigma")]

    def price(f: pd.DataFrame) -> np.ndarray:
        return bs_price(*cols(f)).numpy()

    def delta(f: pd.DataFrame) -> np.ndarray:
        return bs_greeks(*cols(f))["delta"].numpy()

    about = (f"GBM, S0 = {HEDGE['s0']:g}, r = {HEDGE['r']:g}, sigma = {HEDGE['sigma']:g}, "
             f"risk-neutral drift")
    return market, book, price, delta, about


# the Heston market of the hedging test: parameters inside the paper's wide ranges, the variance
# started at its long-run level; Euler substeps per day; the exact price and delta by COS with
# fewer terms than the training labels: at tau in [0.4, 0.9] N = 64, L = 10 give the delta of
# N = 2048 to 6e-12 over moneyness [0.6, 1.4] and v0 [0.05, 0.5]
HEDGE_HESTON: dict[str, Any] = {"v0": 0.15, "kappa": 1.8, "vbar": 0.15, "gamma": 0.25,
                                "rho": -0.6, "substeps": 4, "N": 64, "L": 10.0}


def _heston_hedge_market(run: Any, paths: int, seed: int) -> tuple[Any, Any, Any, Any, str]:
    """Heston paths (full-truncation Euler, risk-neutral), the book, and the COS price and its
    exact delta ``d(V/K)/d(S/K)`` at the path's current variance (autograd through COS)."""
    from nnfin.finance.hedging import Book, simulate_heston
    from nnfin.finance.heston import heston_cos_price, heston_cos_sensitivities

    h = HEDGE_HESTON
    market = simulate_heston(HEDGE["s0"], h["v0"], r=HEDGE["r"], kappa=h["kappa"], vbar=h["vbar"],
                             gamma=h["gamma"], rho=h["rho"], horizon=HEDGE["horizon"],
                             steps=HEDGE["steps"], paths=paths, seed=seed, substeps=h["substeps"])
    book = Book(strikes=HEDGE["strikes"], maturity=HEDGE["maturity"])

    def args(f: pd.DataFrame) -> tuple[list[np.ndarray], dict[str, Any]]:
        named = {k: f[k].to_numpy() for k in ("rho", "kappa", "vbar", "gamma", "v0")}
        return [f[c].to_numpy() for c in ("moneyness", "tau", "r")], \
            {**named, "n_terms": h["N"], "big_l": h["L"]}

    def price(f: pd.DataFrame) -> np.ndarray:
        pos, kw = args(f)
        return heston_cos_price(*pos, **kw).numpy()

    def delta(f: pd.DataFrame) -> np.ndarray:
        pos, kw = args(f)
        return heston_cos_sensitivities(*pos, **kw)[1]["moneyness"].numpy()

    about = (f"Heston by full-truncation Euler ({h['substeps']} substeps a day), S0 = "
             f"{HEDGE['s0']:g}, r = {HEDGE['r']:g}, v0 = vbar = {h['vbar']:g}, kappa = "
             f"{h['kappa']:g}, gamma = {h['gamma']:g}, rho = {h['rho']:g}, risk-neutral drift; "
             f"exact price and delta by COS (N = {h['N']}, L = {h['L']:g})")
    return market, book, price, delta, about


# kind -> f(run, paths, seed) -> (market, book, exact price, exact delta, description)
HEDGE_MARKETS: dict[str, Any] = {"black-scholes": _bs_hedge_market, "heston": _heston_hedge_market}


def _hedging_section(run: Any, report: Report, paths: int, seed: int) -> pd.DataFrame | None:
    from nnfin.finance.hedging import hedge_book, pnl_summary

    kind = run.config.data.kind
    if run.targets != ["price"] or "moneyness" not in run.features \
            or run.config.data.options.get("option", "call") != "call":
        report.notes.append("hedging test skipped: it needs a call price surrogate with a "
                            "moneyness input")
        return None
    market, book, price, exact_delta, about = HEDGE_MARKETS[kind](run, paths, seed)
    missing = [f for f in run.features if f not in ("moneyness", "tau", *market.params, *market.state)]
    if missing:
        report.notes.append(f"hedging test skipped: the run's inputs {missing!r} are not market "
                            f"inputs of the simulated paths")
        return None

    def network_delta(f: pd.DataFrame) -> np.ndarray:
        return surrogate_greeks(run, f[run.features].to_numpy(), ["delta"])["delta"]

    report.hedge_pnls = {"exact delta": hedge_book(market, book, exact_delta, price),
                         "network delta": hedge_book(market, book, network_delta, price),
                         "no hedge": hedge_book(market, book, None, price)}
    table = pnl_summary(report.hedge_pnls, "exact delta")
    report.settings["hedging"] = {**{k: list(v) if isinstance(v, tuple) else v
                                     for k, v in HEDGE.items()}, "paths": paths, "seed": seed}
    report.notes.append(
        f"hedging: short {len(book.strikes)} calls (strikes {', '.join(f'{k:g}' for k in book.strikes)}, "
        f"maturity {book.maturity:g}), delta-hedged at each of {market.steps} daily steps over "
        f"{market.times[-1]:g} years on {paths} paths ({about}, seed {seed}); the book is sold and "
        f"bought back at the exact price for every hedger, so P&Ls differ by the delta only")
    opts = run.config.data.options
    box, _ = resolve_ranges(kind, opts.get("ranges", "wide"), opts.get("overrides"))
    moving = {"moneyness": market.spot[:, :-1][None, :, :] / np.asarray(book.strikes)[:, None, None],
              **{name: values[:, :-1] for name, values in market.state.items()}}
    for name, values in moving.items():
        if name not in box:
            continue
        lo, hi = box[name]
        outside = float(np.mean((values < lo) | (values > hi)))
        if outside > 0:
            report.notes.append(f"hedging: {outside:.2%} of the hedge's deltas are at a {name} "
                                f"outside the training range [{lo:g}, {hi:g}] (the network "
                                "extrapolates)")
    return table


def _iv_section(run: Any, report: Report, iv_n: int, brentq: bool) -> pd.DataFrame | None:
    from nnfin.finance.iv_compare import IV_INPUTS, TABLE8, compare_iv_solvers

    if not set(run.features) <= set(IV_INPUTS):
        report.notes.append(f"IV solver comparison skipped: inputs {run.features!r} are not all "
                            f"computable from prices")
        return None
    with torch.no_grad():
        table = compare_iv_solvers(run.predict, run.features, n=iv_n, seed=0, brentq=brentq)
    report.notes.append(
        f"IV solvers: {iv_n} calls of the paper's Table 8 setting (r = {TABLE8['r']}, "
        f"T = {TABLE8['tau']}, S0 = K = 1, sigma uniform in {list(TABLE8['sigma'])}); errors "
        f"against the true sigma; network and Newton: best of 3 passes, brentq: one pass; these "
        f"options sit on the forward-ATM kink of the time value, where IV networks err most")
    opts = run.config.data.options
    box, _ = resolve_ranges(run.config.data.kind, opts.get("ranges", "wide"), opts.get("overrides"))
    lo, hi = box["r"]
    if not lo <= TABLE8["r"] <= hi:
        report.notes.append(f"r = {TABLE8['r']} lies outside the training range r in [{lo}, {hi}]: "
                            f"the network extrapolates there")
    return table


REPORT_FILES = ("metrics.csv", "iv_solvers.csv", "hedging.csv", "report.json", "error_surface.png",
                "greeks.png", "hedging.png")


def write_report(run: Any, trainer: Any = None, *, out: str | Path | None = None,
                 plots: bool | None = None, force: bool | None = None, **kwargs: Any) -> Report:
    """:func:`evaluate`, then write ``metrics.csv``, ``report.json`` and the figures into
    ``out`` (default ``<run>/report``; ``plots`` defaults to ``[run] plots``). Keyword
    arguments go to :func:`evaluate`.

    The run's own ``report/`` folder is rewritten, and holds this report's files only: one an
    earlier report wrote and this one does not (``hedging.csv`` after ``hedge=False``, the
    figures after ``plots=False``) is removed. In a folder given as ``out``, existing report
    files are refused (before the evaluation runs) unless ``force=True``, and no other file is
    removed.
    """
    from nnfin import files

    if out is None and run.dir is None:
        raise ConfigError("write_report needs a run folder (run.dir) or out=...")
    folder = Path(out) if out is not None else Path(run.dir) / "report"
    force = out is None if force is None else force
    field = "--out" if out is not None else None
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {str(folder)!r} is a file; give a folder for the report")
    for name in REPORT_FILES:
        files.check_target(folder / name, force=force, field=field)
    locked = run.dir is not None and out is None  # the run folder is written: hold its lock
    with files.RunLock(run.dir, "nnfin report") if locked else contextlib.nullcontext():
        report = _write_report(run, trainer, folder, plots, force, field, kwargs)
        if out is None:  # nnfin's own folder: no file of an earlier report next to this one's
            written = {Path(p).name for p in report.files}
            for name in REPORT_FILES:
                if name not in written:
                    files.remove(folder / name)
        return report


def _write_report(run: Any, trainer: Any, folder: Path, plots: bool | None, force: bool,
                  field: str | None, kwargs: dict[str, Any]) -> Report:
    from nnfin import files

    report = evaluate(run, trainer, **kwargs)
    write = {"force": force, "field": field}
    report.files.append(files.write_frame(folder / "metrics.csv", report.metrics, float_format="%.6g",
                                          **write))
    if report.iv is not None:
        report.files.append(files.write_frame(folder / "iv_solvers.csv", report.iv, float_format="%.6g",
                                              **write))
    if report.hedging is not None:
        report.files.append(files.write_frame(folder / "hedging.csv", report.hedging,
                                              float_format="%.6g", **write))
    summary = {"kind": report.kind, "run": str(run.dir) if run.dir else None,
               "settings": report.settings, "notes": report.notes,
               "metrics": report.metrics.to_dict(orient="records"),
               "iv_solvers": None if report.iv is None else report.iv.to_dict(orient="records"),
               "hedging": None if report.hedging is None else report.hedging.to_dict(orient="records")}
    text = json.dumps(_finite(summary), indent=2, default=files.json_default, allow_nan=False)
    report.files.append(files.write_text(folder / "report.json", text + "\n", **write))
    if run.config.run.plots if plots is None else plots:
        from nnfin.finance.report_plots import error_surface_figure, greeks_figure, hedging_figure
        from nnfin.plots import save

        tests = {k: v for k, v in report.samples.items() if k.startswith("test")}
        if tests and {"moneyness", "tau"} <= set(run.features):
            fig = error_surface_figure(tests, run.features, run.targets[0])
            report.files.append(save(fig, folder / "error_surface.png", **write))
        if any("delta_nn" in s for s in report.samples.values()):
            fig = greeks_figure(run, report.samples, option=report.settings["option"],
                                gamma_fd_step=report.settings.get("gamma_fd_step"))
            report.files.append(save(fig, folder / "greeks.png", **write))
        if report.hedge_pnls:
            fig = hedging_figure(report.hedge_pnls)
            report.files.append(save(fig, folder / "hedging.png", **write))
    return report


def _finite(obj: Any) -> Any:
    """NaN and infinities become ``null`` (JSON has neither)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return None
    return obj
