"""What a search writes into ``<run>/tune/``: the ranking, every trial, the best config, plots.

```
tune/
  study.db       the Optuna study (SQLite storage; rerunning the command continues it)
  trials.csv     every trial: number, state, value, params, fold values, std, time
  ranking.csv    candidates ranked by mean CV metric (pruned ones last)
  best.toml      the best configuration, ready for `nnfin fit tune/best.toml`
  plots/         history.png (metric vs. trial, best so far), params.png (metric vs. each parameter);
                 Optuna's optuna_history.png, optuna_slice.png and optuna_importances.png
```

>>> df = ranking(study, params)  # doctest: +SKIP
>>> df[["rank", "trial", "mean", "std", "time_s"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import tomli_w

from nnfin.tune.space import Param, decode

if TYPE_CHECKING:
    from nnfin.config import Config
    from nnfin.runs import Run

COLUMNS = ["rank", "trial", "state", "mean", "std", "folds", "time_s", "params"]


@dataclass
class TuneResult:
    """What a search leaves: the study, the ranking, the best candidate and its refit."""

    study: Any
    ranking: pd.DataFrame
    budget: int
    metric: str
    best_params: dict[str, Any] | None = None
    best_value: float | None = None
    best_config: Config | None = None
    run: Run | None = None
    dir: Path | None = None
    storage: str = "memory"
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return int((self.ranking["state"] == "COMPLETE").sum()) if len(self.ranking) else 0


def ranking(study: Any, params: list[Param]) -> pd.DataFrame:
    """Completed candidates by mean CV metric (best first), then pruned ones by their last
    running mean. ``params`` holds each candidate's decoded values; one column per parameter too."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        values = t.user_attrs.get("fold_values", [])
        if t.state == TrialState.COMPLETE:
            mean = t.value
        elif t.intermediate_values:
            mean = t.intermediate_values[max(t.intermediate_values)]
        else:
            mean = math.nan
        p = decode(params, t.params)
        rows.append({"trial": t.number, "state": t.state.name, "mean": mean,
                     "std": t.user_attrs.get("std", math.nan), "folds": len(values),
                     "time_s": t.user_attrs.get("time_s", math.nan), "params": p,
                     **{name: _show(v) for name, v in p.items()}})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    df["_key"] = df["mean"].astype(float) * sign
    df["_pruned"] = df["state"] != "COMPLETE"
    df = df.sort_values(["_pruned", "_key", "trial"]).drop(columns=["_key", "_pruned"])
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def _label(value: Any) -> str:
    """A categorical value as a tick label: ``0.003``, ``[16, 16]``, ``tanh``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _show(value: Any) -> Any:
    return str(value) if isinstance(value, (list, dict)) else value


def best_toml(result: TuneResult) -> str:
    """The best configuration as TOML for ``nnfin fit`` (no run folder, no [tune] table)."""
    assert result.best_config is not None
    raw = result.best_config.to_dict()
    raw.pop("tune", None)
    raw.get("run", {}).pop("dir", None)
    shown = ", ".join(f"{k} = {v!r}" for k, v in (result.best_params or {}).items())
    head = (f"# best of {result.completed} trials by {result.metric} (mean over the folds: "
            f"{result.best_value:.6g}): {shown}\n# nnfin fit best.toml trains it\n\n")
    return head + tomli_w.dumps(raw)


def write_outputs(run_dir: Path, study: Any, result: TuneResult, *, plots: bool = True) -> None:
    """trials.csv, ranking.csv, best.toml and (``plots``) the plots under ``run_dir/tune``."""
    from nnfin import files

    out = run_dir / "tune"  # the search's own outputs: rewritten as the study grows
    trials = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params",
                                           "user_attrs", "datetime_start", "datetime_complete"))
    files.write_frame(out / "trials.csv", trials, force=True)
    files.write_frame(out / "ranking.csv", result.ranking.drop(columns=["params"], errors="ignore"),
                      force=True)
    if result.best_config is not None:
        files.write_text(out / "best.toml", best_toml(result), force=True)
    if plots and len(result.ranking):
        from nnfin.plots import save

        save(history_figure(result.ranking, result.metric), out / "plots" / "history.png")
        params = [c for c in result.ranking.columns if c not in COLUMNS]
        save(params_figure(result.ranking, params, result.metric, _log_axes(study),
                           categorical=_categorical(study)), out / "plots" / "params.png")
        for note in optuna_plots(study, out / "plots", result.metric):
            if note not in result.notes:
                result.notes.append(note)


OPTUNA_PLOTS = ("optuna_history.png", "optuna_slice.png", "optuna_importances.png")
MIN_IMPORTANCE_TRIALS = 4  # completed trials below which parameter importances mean little


def optuna_plots(study: Any, folder: Path, metric: str) -> list[str]:
    """Optuna's own plots of the study into ``folder``: ``optuna_history.png`` (metric against
    trial), ``optuna_slice.png`` (metric against each parameter) and ``optuna_importances.png``
    (fANOVA importance of each parameter; it needs two or more parameters and
    ``MIN_IMPORTANCE_TRIALS`` completed trials). Returns notes on the plots left out."""
    import warnings

    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from nnfin.plots import save

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return ["optuna plots left out: no completed trial"]
    names = sorted({name for t in done for name in t.params})
    notes: list[str] = []
    # Optuna's plots switch matplotlib to its ggplot style for good: the style is theirs for the
    # while, and the figures drawn after them (the refit's) keep the style they had
    with warnings.catch_warnings(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore", ExperimentalWarning)  # the matplotlib plots are experimental
        ax = ovm.plot_optimization_history(study, target_name=metric)
        save(_figure(ax), folder / "optuna_history.png")
        if names:
            ax = ovm.plot_slice(study, target_name=metric)
            save(_slanted(ax, len(names)), folder / "optuna_slice.png")
        if len(names) < 2 or len(done) < MIN_IMPORTANCE_TRIALS:
            notes.append(f"optuna_importances.png left out: parameter importances need 2 or more "
                         f"parameters and {MIN_IMPORTANCE_TRIALS} or more completed trials "
                         f"({len(names)} and {len(done)} here)")
        else:
            try:
                ax = ovm.plot_param_importances(study, target_name=metric)
            except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
                notes.append(f"optuna_importances.png left out: {exc}")
            else:
                save(_figure(ax), folder / "optuna_importances.png")
    return notes


def _figure(ax: Any) -> Any:
    """The figure of the Axes that Optuna returns, laid out."""
    from nnfin.plots import layout

    return layout(ax.figure)


def _slanted(ax: Any, panels: int) -> Any:
    """Optuna's slice plot, one panel per parameter, wide enough and with slanted tick labels
    (categories such as ``'[32, 32, 32]'`` overlap otherwise), laid out around its colorbar
    (shared by the panels, so the panels keep Optuna's arrangement: :func:`nnfin.plots.layout`)."""
    from nnfin.plots import layout

    axes = np.ravel(np.asarray(ax, dtype=object))
    fig = axes[0].figure
    fig.set_size_inches(max(6.0, 3.6 * panels + 1.5), 5.2)
    for a in axes:
        for label in a.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
            label.set_fontsize(8)
    return layout(fig)


def _categorical(study: Any) -> set[str]:
    from optuna.distributions import CategoricalDistribution

    return {name for t in study.get_trials(deepcopy=False) for name, dist in t.distributions.items()
            if isinstance(dist, CategoricalDistribution)}


def _log_axes(study: Any) -> set[str]:
    from optuna.distributions import FloatDistribution, IntDistribution

    logs: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log:
                logs.add(name)
    return logs


def _log_y(values: np.ndarray, metric: str) -> bool:
    finite = values[np.isfinite(values)]
    return metric != "val_r2" and len(finite) > 0 and bool((finite > 0).all())


def history_figure(df: pd.DataFrame, metric: str) -> Any:
    """The metric of every trial in trial order, and the best so far."""
    import matplotlib.pyplot as plt

    from nnfin.plots import layout

    fig, ax = plt.subplots(figsize=(6, 4))
    df = df.sort_values("trial")
    done = df[df["state"] == "COMPLETE"]
    pruned = df[df["state"] != "COMPLETE"]
    ax.scatter(done["trial"], done["mean"], s=16, label="complete", color="tab:blue")
    if len(pruned):
        ax.scatter(pruned["trial"], pruned["mean"], s=16, marker="x", label="pruned", color="tab:gray")
    if len(done):
        vals = done["mean"].to_numpy(float)
        best = np.maximum.accumulate(vals) if metric == "val_r2" else np.minimum.accumulate(vals)
        ax.step(done["trial"], best, where="post", color="tab:red", label="best so far")
    if _log_y(df["mean"].to_numpy(float), metric):
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (mean over folds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return layout(fig)


def params_figure(df: pd.DataFrame, params: list[str], metric: str, log_x: set[str],
                  categorical: set[str] | None = None) -> Any:
    """One panel per parameter: each completed trial's metric against that parameter's value.
    A parameter in ``categorical`` (or with values that are not numbers) gets one labelled
    position per value, sorted."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from nnfin.plots import layout

    done = df[df["state"] == "COMPLETE"]
    n = max(1, len(params))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    y = done["mean"].to_numpy(float)
    categories = []
    for ax, name in zip(axes.flat, params, strict=False):
        col = done[name]
        numeric = col.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
        if numeric and name not in (categorical or set()):
            ax.scatter(col.astype(float), y, s=16)
            if name in log_x:
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        else:  # categorical: one position per value, labelled (numbers in numeric order)
            values = ([_label(v) for v in sorted(set(col.astype(float)))] if numeric
                      else sorted(set(col.map(_label))))
            where = {v: i for i, v in enumerate(values)}
            ax.scatter([where[_label(v)] for v in col], y, s=16)
            ax.set_xticks(range(len(values)), values)
            ax.set_xlim(-0.5, len(values) - 0.5)
            if len(values) > 4 or max((len(v) for v in values), default=0) > 6:
                ax.tick_params(axis="x", labelsize=8)
            categories.append(ax)
        if _log_y(y, metric):
            ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    layout(fig)
    if categories:  # labels that would overlap side by side are turned upright
        renderer = fig.canvas.get_renderer()
        turned = False
        for ax in categories:
            boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
            if any(a.overlaps(b) for a, b in itertools.pairwise(boxes)):
                ax.tick_params(axis="x", labelrotation=90)
                turned = True
        if turned:
            layout(fig)
    return fig


__all__ = ["best_toml", "history_figure", "optuna_plots", "params_figure", "ranking", "write_outputs"]
