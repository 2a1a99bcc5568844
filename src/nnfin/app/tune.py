"""``nnfin tune``: the search (:mod:`nnfin.tune`), its run folder, outputs and the refit.

>>> import nnfin
>>> res = nnfin.tune("search.toml", overrides=["run.dir=runs/search"])  # doctest: +SKIP
>>> res.ranking.head(), res.best_params, res.run.metrics["test"]  # doctest: +SKIP
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnfin import files
from nnfin.config import Config, load_config, tune_section
from nnfin.errors import ConfigError, NNFinError
from nnfin.runs import Run, abandon_run_dir, create_run_dir
from nnfin.train.folds import make_folds, maximize
from nnfin.tune.report import TuneResult
from nnfin.tune.search import (
    Gate,
    Objective,
    _check_same_search,
    _requeue,
    counts,
    make_pruner,
    make_sampler,
    run_trials,
    study_name,
    trial_budget,
    trials_per_batch,
)
from nnfin.tune.space import apply_params, check_values, parse_space
from nnfin.tune.storage import masked, open_storage, storage_url


def tune_dir(cfg: Config) -> tuple[Path, bool]:
    """The run folder and whether it already holds a search (which is then continued)."""
    if cfg.run.dir and (Path(cfg.run.dir) / "tune").is_dir():
        return Path(cfg.run.dir), True
    path, made = create_run_dir(cfg)
    if made:
        _MADE.add(str(path))
    return path, False


_MADE: set[str] = set()  # run folders this process made for a search (removed again if refused)


def _abandon(run_dir: Path, study: Any, storage: Any) -> None:
    """A search refused before any trial completed leaves no run folder behind: its own files
    go, and the folder too if this process made it."""
    from optuna.trial import TrialState

    if study is not None and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    engine = getattr(storage, "engine", None)  # an RDBStorage (a database file or server)
    if engine is not None:
        engine.dispose()  # the connection closes: SQLite folds its write-ahead log back first
    tune = run_dir / "tune"
    for name in ("study.db", "study.db-journal", "study.db-wal", "study.db-shm", "study.db.lock"):
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


def tune(config: Config | dict | str | Path | None = None, *, overrides: str | Sequence[str] = (),
         run_dir: str | Path | None = None, storage: str | None = None, study: str | None = None,
         trials: int | None = None, folds: int | None = None, strategy: str | None = None,
         device: str | None = None, worker: bool = False, data: Any = None,
         features: str | Sequence[str] | None = None, target: str | Sequence[str] | None = None,
         write: bool = True, progress: bool = False, console: Any = None) -> TuneResult:
    """Search ``[tune.space]`` by K-fold CV; write the ranking, ``tune/`` outputs and the refit.

    With ``worker=True`` this process only runs trials of a shared study (``[tune] storage``
    must be a database every worker reaches) and writes nothing locally. ``write=False``
    writes nothing either (no run folder, no refit; the default SQLite storage becomes memory).
    ``run_dir``, ``storage``, ``study``, ``trials``, ``folds``, ``strategy`` and ``device`` are
    the command line's options; a ``run_dir`` that holds a search continues its study (a note
    says so). ``data`` (with ``features``/``target``) searches on in-memory samples.

    >>> res = tune("search.toml", trials=20, run_dir="runs/search")  # doctest: +SKIP
    """
    from nnfin.app.fit import option_overrides, prepare

    cfg, frame = prepare(config, option_overrides(
        overrides, storage=storage, study=study, strategy=strategy, trials=trials, folds=folds,
        run_dir=run_dir, device=device), data=data, features=features, target=target)
    tc = tune_section(cfg)
    params = parse_space(tc.space)
    if not params:
        raise ConfigError("[tune] space is empty; add candidates under [tune.space], e.g. "
                          '"optim.lr" = {low = 1e-4, high = 1e-1, log = true}')
    check_values(cfg, params)
    budget = trial_budget(tc, params)
    arrays = None
    if frame is not None:
        from nnfin.data.samples import load_samples

        arrays = load_samples(cfg.data, frame=frame)
    plan = make_folds(cfg, tc.folds, seed=tc.seed, inner_val=tc.inner_val, arrays=arrays)
    store, url, out_dir, continued = _storage_and_folder(cfg, worker=worker, write=write)
    return _search(cfg, params, budget, plan, store, url, out_dir, continued, worker=worker,
                   frame=frame, progress=progress, console=console)


def _search(cfg: Config, params: Any, budget: int, folds: Any, storage: Any, url: str | None,
            run_dir: Path | None, continued: bool, *, worker: bool, frame: Any, progress: bool,
            console: Any) -> TuneResult:
    """The search of :func:`tune` once its folds, storage and run folder are set."""
    import optuna

    tc = tune_section(cfg)
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
        if continued:
            notes.append(f"run folder {str(run_dir)!r} holds this search: its study is continued "
                         "(another run folder starts a new one)")
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
        if result.completed:
            result.best_params = dict(result.ranking.iloc[0]["params"])
            result.best_value = float(result.ranking.iloc[0]["mean"])
            result.best_config = refit_config(apply_params(cfg, result.best_params), run_dir)
        if run_dir is not None:
            write_outputs(run_dir, study, result, plots=cfg.run.plots)
            if result.best_config is not None and tc.refit and not interrupted:
                result.run = refit(result.best_config, run_dir, progress=progress, console=console,
                                   frame=frame)
        return result
    except NNFinError:
        if lock is not None and not continued:
            lock.release()
            lock = None
            _abandon(run_dir, study, storage)
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


def refit(cfg: Config, run_dir: Path, *, progress: bool = False, console: Any = None,
          frame: Any = None) -> Run:
    """Train ``cfg`` once into ``run_dir`` (as ``nnfin fit`` does) and test it once."""
    from nnfin.app.fit import build_trainer, finish_run

    trainer, _ = build_trainer(cfg, run_dir=run_dir, progress=progress, console=console, frame=frame)
    trainer.fit()
    return finish_run(trainer, run_dir)
