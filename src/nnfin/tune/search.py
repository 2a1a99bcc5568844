"""Hyperparameter search (``nnfin tune``): Optuna picks candidates, K-fold CV scores them.

One code path for every strategy: ``grid`` (GridSampler; the budget defaults to the grid size),
``random`` (RandomSampler) and ``bayes`` (TPESampler, or GPSampler with ``sampler = "gp"``).
Each trial reports the running mean of its fold metric after every fold, so a MedianPruner
can stop poor candidates early (``pruning = true``). The study lives in a storage (SQLite in
the run folder by default), so an interrupted search keeps its completed trials and the same
command continues it; workers on many machines share a PostgreSQL study and split a fixed
budget: exactly ``trials`` trials complete, whatever the number of workers.

>>> from nnfin.tune import tune
>>> res = tune("search.toml", overrides=["run.dir=runs/search"])  # doctest: +SKIP
>>> res.ranking.head(), res.best_params, res.run.metrics["test"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nnfin.config import Config, TuneConfig, load_config
from nnfin.errors import ConfigError
from nnfin.runs import Run, new_run_dir
from nnfin.tune.cv import FoldResult, Folds, evaluate_candidates, make_folds, maximize, tune_section
from nnfin.tune.space import Param, apply_params, check_values, grid_size, grid_values, parse_space, suggest
from nnfin.tune.storage import Gate, masked, open_storage, storage_url

DEFAULT_TRIALS = 20  # random and bayes, when [tune] trials is not given
POLL_S = 0.5  # how often a worker waiting for others' last trials looks again


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


# -------------------------------------------------------------------------- building blocks


def trial_budget(tc: TuneConfig, params: list[Param]) -> int:
    """Trials to complete: ``[tune] trials``, capped at the grid size for grid search."""
    if tc.strategy == "grid":
        size = grid_size(params)
        return min(tc.trials or size, size)
    return tc.trials or DEFAULT_TRIALS


def make_sampler(tc: TuneConfig, params: list[Param], seed: int) -> Any:
    import optuna

    if tc.strategy == "grid":  # the same seed everywhere: every worker shuffles the grid alike
        return optuna.samplers.GridSampler({p.name: grid_values(p) for p in params}, seed=tc.seed)
    if tc.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tc.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(tc: TuneConfig) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5) if tc.pruning else optuna.pruners.NopPruner()


def fingerprint(cfg: Config) -> dict[str, Any]:
    """What must match for runs to share a study: the config minus where and how it runs."""
    raw = cfg.to_dict()
    raw.pop("run", None)
    for key in ("device", "progress"):
        raw["train"].pop(key, None)
    for key in ("trials", "storage", "study", "heartbeat", "retries", "refit"):
        raw.get("tune", {}).pop(key, None)
    return raw


def study_name(cfg: Config, url: str | None, run_dir: Path | None) -> str:
    tc = tune_section(cfg)
    if tc.study:
        return tc.study
    if tc.storage == "sqlite" and run_dir is not None:
        return "nnfin"
    digest = hashlib.sha256(json.dumps(fingerprint(cfg), sort_keys=True).encode()).hexdigest()
    return f"nnfin-{digest[:10]}"  # the same config on every machine names the same study


def _check_same_search(study: Any, cfg: Config) -> None:
    mine = json.loads(json.dumps(fingerprint(cfg), sort_keys=True))
    theirs = study.user_attrs.get("nnfin_config")
    if theirs is None:
        study.set_user_attr("nnfin_config", mine)
        return
    if theirs != mine:
        flat_a, flat_b = _flat(theirs), _flat(mine)
        key = next(k for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k))
        raise ConfigError(f"[tune] study = {study.study_name!r} was started with {key} = "
                          f"{flat_a.get(key)!r}, this config has {flat_b.get(key)!r}; use the same "
                          "config, or another [tune] study / run folder")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "space":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def counts(study: Any) -> tuple[int, int]:
    """``(done, running)``: trials COMPLETE or PRUNED, and trials RUNNING, over all workers."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


class Objective:
    """One trial: suggest values, release the gate, cross-validate, report fold by fold."""

    def __init__(self, base: Config, params: list[Param], folds: Folds, metric: str, gate: Gate,
                 bar: Any = None) -> None:
        self.base, self.params, self.folds, self.metric = base, params, folds, metric
        self.gate, self.bar = gate, bar
        self.current: int | None = None  # number of the trial this process is running

    def __call__(self, trial: Any) -> float:
        import optuna

        values = suggest(trial, self.params)  # under the gate: grid points are handed out once
        self.gate.release()
        self.current = trial.number
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        cfg = apply_params(self.base, values)
        if self.bar is not None:
            self.bar.trial_started(trial.number, values)

        def on_fold(_: int, fold: FoldResult, running_mean: float) -> bool:
            trial.report(running_mean, fold.fold)
            return not trial.should_prune()

        ticks = (lambda c, i: [self.bar.epoch_callback(i)]) if self.bar is not None else None
        (res,) = evaluate_candidates([cfg], self.folds, metric=self.metric, on_fold=on_fold,
                                     fold_callbacks=ticks)
        trial.set_user_attr("fold_values", [float(v) for v in res.values()])
        trial.set_user_attr("std", res.std)
        trial.set_user_attr("time_s", round(res.time_s, 3))
        trial.set_user_attr("epochs", [f.epochs for f in res.folds])
        if len(res.folds) < self.folds.k:
            raise optuna.TrialPruned(f"pruned after {len(res.folds)} of {self.folds.k} folds")
        return res.mean


def run_trials(study: Any, objective: Callable[[Any], float], budget: int, gate: Gate, *,
               on_trial_end: Callable[[Any, Any], None] | None = None, poll: float = POLL_S) -> None:
    """Start trials until ``budget`` of them are COMPLETE or PRUNED in the study.

    "Count, then start one" runs under the gate, so concurrent workers never overshoot. A
    worker that finds the remaining trials all running elsewhere waits: one of them may die,
    be failed by the heartbeat check and queued again, and then this worker takes it over.
    """
    from optuna.storages import fail_stale_trials

    callbacks = [on_trial_end] if on_trial_end is not None else []
    while True:
        with gate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fail_stale_trials(study)
            done, running = counts(study)
            if done >= budget:
                return
            if done + running < budget:
                study.optimize(objective, n_trials=1, gc_after_trial=False, callbacks=callbacks)
                continue
        time.sleep(poll)


def _requeue(study: Any, number: int | None, retries: int) -> None:
    """After Ctrl-C, queue the interrupted trial again so the continued search redoes it."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number == number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, t)


def tune_dir(cfg: Config) -> tuple[Path, bool]:
    """The run folder and whether it already holds a search (which is then continued)."""
    if cfg.run.dir and (Path(cfg.run.dir) / "tune").is_dir():
        return Path(cfg.run.dir), True
    return new_run_dir(cfg), False


def _storage_and_folder(cfg: Config, *, worker: bool, write: bool
                        ) -> tuple[Any, str | None, Path | None, bool]:
    """``(storage, url, run_dir, continued)``; a database is opened before the run folder is
    made, so an unreachable one leaves no folder behind."""
    tc = tune_section(cfg)
    if worker and tc.storage in ("sqlite", "memory"):
        raise ConfigError(f"[tune] storage = {tc.storage!r}: a worker needs a database that every "
                          "worker reaches; give --storage postgresql://... (or sqlite:///shared.db)")
    local = write and not worker
    if local and tc.storage == "sqlite":  # the study lives in the run folder
        run_dir, continued = tune_dir(cfg)
        url = storage_url("sqlite", run_dir)
        return open_storage(url, heartbeat=tc.heartbeat, retries=tc.retries), url, run_dir, continued
    url = storage_url("memory" if tc.storage == "sqlite" else tc.storage, None)
    storage = open_storage(url, heartbeat=tc.heartbeat, retries=tc.retries)
    run_dir, continued = tune_dir(cfg) if local else (None, False)
    return storage, url, run_dir, continued


# ---------------------------------------------------------------------------------- API


def tune(config: Config | dict | str | Path | None = None, *, overrides: Sequence[str] = (),
         worker: bool = False, write: bool = True, progress: bool = False,
         console: Any = None) -> TuneResult:
    """Search ``[tune.space]`` by K-fold CV; write the ranking, ``tune/`` outputs and the refit.

    With ``worker=True`` this process only runs trials of a shared study (``[tune] storage``
    must be a database every worker reaches) and writes nothing locally. ``write=False``
    writes nothing either (no run folder, no refit; the default SQLite storage becomes memory).
    """
    import optuna

    cfg = load_config(config, overrides)
    tc = tune_section(cfg)
    params = parse_space(tc.space)
    if not params:
        raise ConfigError("[tune] space is empty; add candidates under [tune.space], e.g. "
                          '"optim.lr" = {low = 1e-4, high = 1e-1, log = true}')
    check_values(cfg, params)
    budget = trial_budget(tc, params)
    folds = make_folds(cfg, tc.folds, seed=tc.seed, inner_val=tc.inner_val)
    storage, url, run_dir, continued = _storage_and_folder(cfg, worker=worker, write=write)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = study_name(cfg, url, run_dir)
    existing = next((s.n_trials for s in optuna.get_all_study_summaries(storage) if s.study_name == name), 0)
    seed = secrets.randbits(31) if worker else tc.seed + existing  # fresh draws when continuing
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                direction="maximize" if maximize(tc.metric) else "minimize",
                                sampler=make_sampler(tc, params, seed), pruner=make_pruner(tc))
    _check_same_search(study, cfg)
    notes = [f"study {name!r} in {masked(url) if url else 'memory'}"]
    done, _ = counts(study)
    if done:
        notes.append(f"continuing: {min(done, budget)} of {budget} trials already complete")
    if tc.strategy == "grid" and tc.trials and tc.trials > budget:
        notes.append(f"the grid has {budget} points; trials = {tc.trials} capped to {budget}")

    bar = None
    if progress and cfg.train.progress:
        from nnfin.tune.progress import SearchProgress

        bar = SearchProgress(console, folds=folds.k, trials=budget, completed=min(done, budget))
    gate = Gate(storage, url, name)
    objective = Objective(load_config(cfg, ["train.progress=false"]), params, folds, tc.metric,
                          gate, bar)

    def on_trial_end(study: Any, trial: Any) -> None:
        if bar is not None:
            try:
                best = study.best_value
            except ValueError:  # no completed trial yet
                best = None
            bar.trial_done(min(counts(study)[0], budget), best)

    interrupted = False
    try:
        run_trials(study, objective, budget, gate, on_trial_end=on_trial_end)
    except KeyboardInterrupt:
        interrupted = True
        _requeue(study, objective.current, tc.retries)
    finally:
        gate.release()
        if bar is not None:
            bar.stop()

    from nnfin.tune.report import ranking, write_outputs

    result = TuneResult(study, ranking(study, params), budget, tc.metric, dir=run_dir,
                        storage=masked(url) if url else "memory", interrupted=interrupted, notes=notes)
    if continued and not interrupted:
        notes.append(f"run folder {str(run_dir)!r} continued")
    if result.completed:
        result.best_params = dict(result.ranking.iloc[0]["params"])
        result.best_value = float(result.ranking.iloc[0]["mean"])
        result.best_config = refit_config(apply_params(cfg, result.best_params), run_dir)
    if run_dir is not None:
        write_outputs(run_dir, study, result, plots=cfg.run.plots)
        if result.best_config is not None and tc.refit and not interrupted:
            result.run = refit(result.best_config, run_dir, progress=progress, console=console)
    return result


def refit_config(best: Config, run_dir: Path | None) -> Config:
    """The best candidate as trained on the whole training part: without early stopping the
    validation rows join the training rows (the test rows stay the same: the split is seeded)."""
    raw = best.to_dict()
    if not best.early_stopping.enabled:
        train, val, test = best.data.split
        raw["data"]["split"] = [train + val, 0.0, test]
    raw["run"]["dir"] = str(run_dir) if run_dir is not None else None
    raw["run"] = {k: v for k, v in raw["run"].items() if v is not None}
    return load_config(raw)


def refit(cfg: Config, run_dir: Path, *, progress: bool = False, console: Any = None) -> Run:
    """Train ``cfg`` once into ``run_dir`` (as ``nnfin fit`` does) and test it once."""
    from nnfin.api import build_trainer, finish_run

    trainer, _ = build_trainer(cfg, run_dir=run_dir, progress=progress, console=console)
    trainer.fit()
    return finish_run(trainer, run_dir)
