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

:func:`write_report` writes ``report/metrics.csv``, ``report/iv_solvers.csv`` (IV runs),
``report/report.json``, ``report/error_surface.png`` and ``report/greeks.png`` into the run.

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
                            "gamma_fd_step": 1e-2}
METRICS = ("mse", "rmse", "mae", "mape", "r2", "max_abs_error")
_GEN_KEYS = ("sampler", "option", "N", "L", "chunk", "device", "min_time_value")


@dataclass
class Report:
    """What :func:`evaluate` found; ``metrics`` has one row per (split, quantity)."""

    kind: str
    metrics: pd.DataFrame
    iv: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    # per split: inputs, targets, predictions (and Greeks) for the plots
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)


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
                 fields: tuple[str, str] = ("n", "iv_n")) -> int:
    """Refuse test sets (``n`` rows each) or IV options (``iv_n``) that cannot fit in memory.

    Per test set: the generator's peak, the rows kept for the metrics and plots and one forward
    pass of all rows through the network (float64, with its graph). ``fields`` names ``n`` and
    ``iv_n`` in the message (the CLI passes ``("--n", "--iv-n")``). Returns the bytes.

    >>> check_memory(run, n=20_000)  # doctest: +SKIP
    """
    from nnfin.finance.datasets import check_memory as check_generation
    from nnfin.memory import format_count, require

    kind = finance_kind(run)
    n = DEFAULTS["n"] if n is None else n
    iv_n = DEFAULTS["iv_n"] if iv_n is None else iv_n
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
    return total


def evaluate(run: Any, trainer: Any = None, *, n: int | None = None, seed: int | None = None,
             train: bool = True, greeks: bool = True, iv: bool = True, iv_n: int | None = None,
             brentq: bool = True, mape_cutoff: float | None = None) -> Report:
    """Score ``run`` on train / test-wide / test-narrow, its Greeks, and (IV runs) the solvers.

    ``n`` sizes each test set, ``iv_n`` the Table 8 options (defaults in :data:`DEFAULTS`);
    ``train = False`` skips regenerating the training rows of a loaded run.
    """
    kind = finance_kind(run)
    n = DEFAULTS["n"] if n is None else n
    iv_n = DEFAULTS["iv_n"] if iv_n is None else iv_n
    check_memory(run, n=n, iv_n=iv_n if iv else 0)
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
    return report


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


REPORT_FILES = ("metrics.csv", "iv_solvers.csv", "report.json", "error_surface.png", "greeks.png")


def write_report(run: Any, trainer: Any = None, *, out: str | Path | None = None,
                 plots: bool | None = None, force: bool | None = None, **kwargs: Any) -> Report:
    """:func:`evaluate`, then write ``metrics.csv``, ``report.json`` and the figures into
    ``out`` (default ``<run>/report``; ``plots`` defaults to ``[run] plots``). Keyword
    arguments go to :func:`evaluate`.

    The run's own ``report/`` folder is rewritten; in a folder given as ``out``, existing
    report files are refused (before the evaluation runs) unless ``force=True``.
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
        return _write_report(run, trainer, folder, plots, force, field, kwargs)


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
    summary = {"kind": report.kind, "run": str(run.dir) if run.dir else None,
               "settings": report.settings, "notes": report.notes,
               "metrics": report.metrics.to_dict(orient="records"),
               "iv_solvers": None if report.iv is None else report.iv.to_dict(orient="records")}
    text = json.dumps(_finite(summary), indent=2, default=files.json_default, allow_nan=False)
    report.files.append(files.write_text(folder / "report.json", text + "\n", **write))
    if run.config.run.plots if plots is None else plots:
        from nnfin.finance.report_plots import error_surface_figure, greeks_figure
        from nnfin.plots import save

        tests = {k: v for k, v in report.samples.items() if k.startswith("test")}
        if tests and {"moneyness", "tau"} <= set(run.features):
            fig = error_surface_figure(tests, run.features, run.targets[0])
            report.files.append(save(fig, folder / "error_surface.png", **write))
        if any("delta_nn" in s for s in report.samples.values()):
            fig = greeks_figure(run, report.samples, option=report.settings["option"],
                                gamma_fd_step=report.settings.get("gamma_fd_step"))
            report.files.append(save(fig, folder / "greeks.png", **write))
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
