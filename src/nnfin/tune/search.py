"""Hyperparameter search (``nnfin tune``): Optuna picks candidates, K-fold CV scores them.

One code path for every strategy: ``grid`` (GridSampler; the budget defaults to the grid size),
``random`` (RandomSampler) and ``bayes`` (TPESampler, or GPSampler with ``sampler = "gp"``).
Each trial reports the running mean of its fold metric after every fold, so a MedianPruner
can stop poor candidates early (``pruning = true``). The study lives in a storage (SQLite in
the run folder by default), so an interrupted search keeps its completed trials and the same
command continues it; workers on many machines share a PostgreSQL study and split a fixed
budget: exactly ``trials`` trials complete, whatever the number of workers.

>>> from nnfin.app.tune import tune
>>> res = tune("search.toml", overrides=["run.dir=runs/search"])  # doctest: +SKIP
>>> res.ranking.head(), res.best_params, res.run.metrics["test"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nnfin.config import Config, TuneConfig, flatten, load_config, tune_section
from nnfin.errors import ConfigError
from nnfin.train.folds import FoldResult, Folds, evaluate_candidates
from nnfin.tune.space import Param, apply_params, grid_size, grid_values, suggest
from nnfin.tune.storage import Gate

DEFAULT_TRIALS = 20  # random and bayes, when [tune] trials is not given
MAX_BATCH = 64  # grid and random: trials asked for at once (all of them, up to this)
BAYES_BATCH = 8  # bayes: each batch is sampled knowing the earlier ones (TPE's constant liar)
POLL_S = 0.5  # how often a worker waiting for others' last trials looks again


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
        return grid_sampler({p.name: grid_values(p) for p in params}, seed=tc.seed)
    if tc.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tc.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its ``study.stop()`` once the grid is handed out
        (which only works inside ``study.optimize``): :func:`run_trials` keeps the budget."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridSampler


def grid_sampler(*args: Any, **kwargs: Any) -> Any:
    """An instance of the grid sampler below (the class is built when Optuna is imported)."""
    return _grid_sampler_class()(*args, **kwargs)


def make_pruner(tc: TuneConfig) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5) if tc.pruning else optuna.pruners.NopPruner()


def fingerprint(cfg: Config) -> dict[str, Any]:
    """What must match for runs to share a study: the config minus where and how it runs."""
    raw = cfg.to_dict()
    raw.pop("run", None)
    for key in ("device", "progress"):
        raw["train"].pop(key, None)
    for key in ("trials", "storage", "study", "heartbeat", "retries", "refit", "batch_trials",
                "batch_memory_mb"):
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
    if theirs != mine:  # a study started by an earlier nnfin lacks keys added since: defaults apply
        with contextlib.suppress(ConfigError):
            theirs = json.loads(json.dumps(fingerprint(load_config(theirs)), sort_keys=True))
    if theirs != mine:
        flat_a, flat_b = flatten(theirs), flatten(mine)
        key = next(k for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k))
        raise ConfigError(f"[tune] study = {study.study_name!r} was started with {key} = "
                          f"{flat_a.get(key)!r}, this config has {flat_b.get(key)!r}; use the same "
                          "config, or another [tune] study / run folder")


def counts(study: Any) -> tuple[int, int]:
    """``(done, running)``: trials COMPLETE or PRUNED, and trials RUNNING, over all workers."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


def trials_per_batch(tc: TuneConfig, base: Config, *, worker: bool = False) -> int:
    """How many trials to ask for at once: ``[tune] batch_trials``, else the whole grid or
    random budget (up to 64) or 8 for bayes (8 for a worker, so workers share the budget), and
    1 where batches would not help (pruning, which judges a trial against completed ones, or
    a config the batched engine cannot take)."""
    from nnfin.train.stack.batched import unsupported_reason

    if tc.batch_trials is not None:
        return tc.batch_trials
    if tc.pruning or not tc.batched or unsupported_reason(base) is not None:
        return 1
    return BAYES_BATCH if tc.strategy == "bayes" or worker else MAX_BATCH


class Objective:
    """Cross-validate trials: suggest values (under the gate), train every trial of a batch
    together (:func:`~nnfin.train.folds.evaluate_candidates`), report fold by fold, tell the study.

    Called with one trial it returns its value (raises ``TrialPruned``), like an Optuna
    objective; :meth:`run_batch` takes trials asked with ``study.ask()`` and tells them.
    """

    def __init__(self, base: Config, params: list[Param], folds: Folds, metric: str, gate: Gate,
                 bar: Any = None) -> None:
        self.base, self.params, self.folds, self.metric = base, params, folds, metric
        self.gate, self.bar = gate, bar
        self.current: list[int] = []  # numbers of the trials this process is running
        self.batches: list[str] = []  # how each batch of trials was trained

    def __call__(self, trial: Any) -> float:
        values = suggest(trial, self.params)  # under the gate: grid points are handed out once
        self.gate.release()
        outcome = self.evaluate([trial], [values])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def evaluate(self, trials: list[Any], values: list[dict[str, Any]]) -> list[Any]:
        """Cross-validate ``trials`` with their suggested ``values`` in one call; per trial its
        mean metric or the ``TrialPruned`` to tell."""
        import optuna

        self.current = [t.number for t in trials]
        cfgs = [apply_params(self.base, v) for v in values]
        for trial in trials:
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if self.bar is not None:
            self.bar.trials_started([t.number for t in trials], values)

        def on_fold(c: int, fold: FoldResult, running_mean: float) -> bool:
            trials[c].report(running_mean, fold.fold)
            return not trials[c].should_prune()

        bar = self.bar
        ticks = (lambda c, i: [bar.epoch_callback(i)]) if bar is not None else None
        stack_ticks = (lambda: [bar.stack_callback()]) if bar is not None else None
        results = evaluate_candidates(cfgs, self.folds, metric=self.metric, on_fold=on_fold,
                                      fold_callbacks=ticks, stack_callbacks=stack_ticks)
        outcomes: list[Any] = []
        numbers = [t.number for t in trials]
        shown = f"trial #{numbers[0]}" if len(numbers) == 1 else \
            f"trials #{min(numbers)}-#{max(numbers)} ({len(numbers)})"
        engines = sorted({r.engine_note for r in results if r.engine == "batched"})
        one_by_one = sum(r.engine != "batched" for r in results)
        self.batches.append(f"{shown}: " + "; ".join(
            engines + ([f"{one_by_one} one by one"] if one_by_one else [])))
        for trial, res in zip(trials, results, strict=True):
            trial.set_user_attr("fold_values", [float(v) for v in res.values()])
            trial.set_user_attr("std", res.std)
            trial.set_user_attr("time_s", round(res.time_s, 3))
            trial.set_user_attr("epochs", [f.epochs for f in res.folds])
            trial.set_user_attr("engine", res.engine)
            trial.set_user_attr("engine_note", res.engine_note)
            trial.set_user_attr("batch", self.current)  # the trials it trained with
            if len(res.folds) < self.folds.k:
                outcomes.append(optuna.TrialPruned(f"pruned after {len(res.folds)} of "
                                                   f"{self.folds.k} folds"))
            else:
                outcomes.append(res.mean)
        return outcomes

    def run_batch(self, study: Any, trials: list[Any], values: list[dict[str, Any]],
                  callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> None:
        """Evaluate asked ``trials`` under heartbeats and tell the study how each ended; an
        error or Ctrl-C fails the whole batch and is raised again."""
        from optuna.trial import TrialState

        try:
            with _Heartbeats(study, trials):
                outcomes = self.evaluate(trials, values)
        except BaseException:
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL)
            raise
        for trial, outcome in zip(trials, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                frozen = study.tell(trial, state=TrialState.PRUNED)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a NaN mean fails the trial, as optimize() does
                    frozen = study.tell(trial, outcome)
            for callback in callbacks:
                callback(study, frozen)


class _Heartbeats:
    """Beats for every trial of a batch while it trains (``study.optimize`` beats for its one
    trial), so a database's stale-trial check does not fail them."""

    def __init__(self, study: Any, trials: list[Any]) -> None:
        import threading

        storage = study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.storage, self.interval = storage, interval
        self.ids = [t._trial_id for t in trials]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True) if interval else None

    @staticmethod
    def beat(study: Any, trial: Any) -> None:
        """One heartbeat for ``trial`` now: a trial that never beat is never found stale."""
        storage = study._storage
        if getattr(storage, "get_heartbeat_interval", lambda: None)():
            storage.record_heartbeat(trial._trial_id)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                self.storage.record_heartbeat(trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeats:
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()


def run_trials(study: Any, objective: Objective, budget: int, gate: Gate, *,
               on_trial_end: Callable[[Any, Any], None] | None = None, poll: float = POLL_S,
               per_batch: int = 1) -> None:
    """Start trials until ``budget`` of them are COMPLETE or PRUNED in the study.

    "Count, then ask for up to ``per_batch`` trials" runs under the gate, so concurrent
    workers never overshoot; the asked trials train together. A worker that finds the
    remaining trials all running elsewhere waits: one of them may die, be failed by the
    heartbeat check and queued again, and then this worker takes it over.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    callbacks = [on_trial_end] if on_trial_end is not None else []
    while True:
        with gate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fail_stale_trials(study)
            done, running = counts(study)
            if done >= budget:
                return
            trials: list[Any] = []
            values: list[dict[str, Any]] = []
            try:
                for _ in range(max(0, min(per_batch, budget - done - running))):
                    with warnings.catch_warnings():  # "heartbeat ... used with Study.optimize":
                        warnings.simplefilter("ignore")  # _Heartbeats beats for asked trials
                        trials.append(study.ask())
                    _Heartbeats.beat(study, trials[-1])  # from now on a dead worker shows
                    objective.current = [t.number for t in trials]
                    values.append(suggest(trials[-1], objective.params))
            except BaseException:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
        if trials:
            objective.run_batch(study, trials, values, callbacks)
            continue
        time.sleep(poll)


def _requeue(study: Any, numbers: Sequence[int], retries: int) -> None:
    """After Ctrl-C, queue the interrupted trials again so the continued search redoes them."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number in numbers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, t)
