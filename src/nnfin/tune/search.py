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

from nnfin import files
from nnfin.config import Config, TuneConfig, load_config
from nnfin.errors import ConfigError, NNFinError
from nnfin.runs import Run, abandon_run_dir, create_run_dir
from nnfin.tune.cv import FoldResult, Folds, evaluate_candidates, make_folds, maximize, tune_section
from nnfin.tune.space import Param, apply_params, check_values, grid_size, grid_values, parse_space, suggest
from nnfin.tune.storage import Gate, masked, open_storage, storage_url

DEFAULT_TRIALS = 20  # random and bayes, when [tune] trials is not given
MAX_BATCH = 64  # grid and random: trials asked for at once (all of them, up to this)
BAYES_BATCH = 8  # bayes: each batch is sampled knowing the earlier ones (TPE's constant liar)
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


def trials_per_batch(tc: TuneConfig, base: Config, *, worker: bool = False) -> int:
    """How many trials to ask for at once: ``[tune] batch_trials``, else the whole grid or
    random budget (up to 64) or 8 for bayes (8 for a worker, so workers share the budget), and
    1 where batches would not help (pruning, which judges a trial against completed ones, or
    a config the batched engine cannot take)."""
    from nnfin.tune.batched import unsupported_reason

    if tc.batch_trials is not None:
        return tc.batch_trials
    if tc.pruning or not tc.batched or unsupported_reason(base) is not None:
        return 1
    return BAYES_BATCH if tc.strategy == "bayes" or worker else MAX_BATCH


class Objective:
    """Cross-validate trials: suggest values (under the gate), train every trial of a batch
    together (:func:`~nnfin.tune.cv.evaluate_candidates`), report fold by fold, tell the study.

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

        ticks = (lambda c, i: [self.bar.epoch_callback(i)]) if self.bar is not None else None
        results = evaluate_candidates(cfgs, self.folds, metric=self.metric, on_fold=on_fold,
                                      fold_callbacks=ticks)
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


def tune_dir(cfg: Config) -> tuple[Path, bool]:
    """The run folder and whether it already holds a search (which is then continued)."""
    if cfg.run.dir and (Path(cfg.run.dir) / "tune").is_dir():
        return Path(cfg.run.dir), True
    path, made = create_run_dir(cfg)
    if made:
        _MADE.add(str(path))
    return path, False


_MADE: set[str] = set()  # run folders this process made for a search (removed again if refused)


def _abandon(run_dir: Path, study: Any) -> None:
    """A search refused before any trial completed leaves no run folder behind: its own files
    go, and the folder too if this process made it."""
    from optuna.trial import TrialState

    if study is not None and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    tune = run_dir / "tune"
    for name in ("study.db", "study.db-journal", "study.db.lock"):
        files.remove(tune / name)
    files.remove(tune)
    abandon_run_dir(run_dir, str(run_dir) in _MADE)


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
    lock = files.RunLock(run_dir, "nnfin tune").acquire() if run_dir is not None else None
    study = None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        name = study_name(cfg, url, run_dir)
        existing = next((s.n_trials for s in optuna.get_all_study_summaries(storage)
                         if s.study_name == name), 0)
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
        per_batch = trials_per_batch(tc, cfg, worker=worker)
        if per_batch > 1:
            notes.append(f"up to {per_batch} trials at a time, cross-validated together")
        try:
            run_trials(study, objective, budget, gate, on_trial_end=on_trial_end, per_batch=per_batch)
        except KeyboardInterrupt:
            interrupted = True
            _requeue(study, objective.current, tc.retries)
        finally:
            gate.release()
            if bar is not None:
                bar.stop()

        from nnfin.tune.report import ranking, write_outputs

        shown = objective.batches if len(objective.batches) <= 4 else \
            [*objective.batches[:2], f"... {len(objective.batches) - 3} more batches ...",
             objective.batches[-1]]
        notes.extend(shown)

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
    except NNFinError:
        if lock is not None and not continued:
            lock.release()
            lock = None
            _abandon(run_dir, study)
        raise
    finally:
        if lock is not None:
            lock.release()


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
