"""What a search writes into ``<run>/tune/``: the ranking, every trial, the best config, plots.

```
tune/
  study.db       the Optuna study (SQLite storage; rerunning the command continues it)
  trials.csv     every trial: number, state, value, params, fold values, std, time
  ranking.csv    candidates ranked by mean CV metric (pruned ones last)
  best.toml      the best configuration, ready for `nnfin fit tune/best.toml`
  plots/         history.png (metric vs. trial, best so far), params.png (metric vs. each parameter)
```

>>> df = ranking(study, params)  # doctest: +SKIP
>>> df[["rank", "trial", "mean", "std", "time_s"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

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
        save(params_figure(result.ranking, params, result.metric, _log_axes(study)),
             out / "plots" / "params.png")


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
    fig.tight_layout()
    return fig


def params_figure(df: pd.DataFrame, params: list[str], metric: str, log_x: set[str]) -> Any:
    """One panel per parameter: each completed trial's metric against that parameter's value."""
    import matplotlib.pyplot as plt

    done = df[df["state"] == "COMPLETE"]
    n = max(1, len(params))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    y = done["mean"].to_numpy(float)
    for ax, name in zip(axes.flat, params, strict=False):
        col = done[name]
        if col.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            ax.scatter(col.astype(float), y, s=16)
            if name in log_x:
                ax.set_xscale("log")
        else:  # categorical: one position per value, labelled
            labels = sorted(col.astype(str).unique())
            ax.scatter([labels.index(str(v)) for v in col], y, s=16)
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        if _log_y(y, metric):
            ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


__all__ = ["best_toml", "history_figure", "params_figure", "ranking", "write_outputs"]
