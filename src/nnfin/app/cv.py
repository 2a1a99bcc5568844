"""``nnfin cv``: K-fold cross-validation of one configuration, written to a run folder.

The folds and their training live in :mod:`nnfin.train.folds`; this puts a config, the folds
and the run folder together.

>>> import nnfin
>>> res = nnfin.cv(overrides=["train.epochs=20", "data.n=300"], folds=3, write=False)  # doctest: +SKIP
>>> f"{res.mean:.2e} ± {res.std:.1e}", len(res.folds)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnfin import files
from nnfin.config import Config, tune_section
from nnfin.errors import NNFinError
from nnfin.train.folds import CVResult, evaluate_candidates, make_folds


def cross_validate(config: Config | dict | str | Path | None = None, *, folds: int | None = None,
                   overrides: str | Sequence[str] = (), run_dir: str | Path | None = None,
                   device: str | None = None, force: bool = False, data: Any = None,
                   features: str | Sequence[str] | None = None,
                   target: str | Sequence[str] | None = None, write: bool = True,
                   progress: bool = False, console: Any = None) -> CVResult:
    """K-fold cross-validation of one configuration (``nnfin cv``); writes ``cv.csv`` and
    ``cv.json`` into a new run folder unless ``write=False``.

    ``folds`` overrides ``[tune] folds``; the metric, seed and inner validation share come
    from ``[tune]`` too. ``run_dir``, ``device`` and ``force`` are the command line's options
    (``force`` replaces a previous ``nnfin cv`` run in ``run_dir``, nothing else); ``data``
    (with ``features``/``target``) cross-validates in-memory samples, as :func:`nnfin.fit`.

    >>> res = cross_validate(data=(x, y), folds=5, write=False)  # doctest: +SKIP
    """
    from nnfin.app.fit import option_overrides, prepare

    cfg, frame = prepare(config, option_overrides(overrides, folds=folds, run_dir=run_dir,
                                                  device=device),
                         data=data, features=features, target=target)
    tc = tune_section(cfg)
    arrays = None
    if frame is not None:
        from nnfin.data.samples import load_samples

        arrays = load_samples(cfg.data, frame=frame)
    plan = make_folds(cfg, tc.folds, seed=tc.seed, inner_val=tc.inner_val, arrays=arrays)
    bar = None
    if progress and cfg.train.progress:
        from nnfin.tune.progress import SearchProgress

        bar = SearchProgress(console, folds=plan.k)
    run_dir, made, lock, previous = None, False, None, False
    if write:
        from nnfin.runs import abandon_run_dir, clear_run, create_run_dir, write_config

        run_dir, made = create_run_dir(cfg, force=force, kind="cv")
        previous = (run_dir / "config.toml").exists()  # a cv run that force will replace
        lock = files.RunLock(run_dir, "nnfin cv").acquire()
    started = time.perf_counter()
    try:
        if run_dir is not None and not previous:  # a killed cv leaves its config behind
            write_config(run_dir, cfg)
        (res,) = evaluate_candidates(
            [cfg], plan, metric=tc.metric,
            fold_callbacks=(lambda c, i: [bar.epoch_callback(i)]) if bar else None)
        if bar is not None:
            bar.progress.update(bar.fold_task, completed=plan.k)
    except NNFinError:
        if lock is not None:  # a refused config leaves no run folder behind, and keeps a previous run
            lock.release()
            abandon_run_dir(run_dir, made, keep=previous)
        raise
    finally:
        if bar is not None:
            bar.stop()
    res.dir = run_dir
    if progress and console is not None:
        console.print(res.engine_note)
    if run_dir is not None:
        try:
            if previous:  # replaced only now that the new cv has its results
                clear_run(run_dir)
                write_config(run_dir, cfg)
            table = res.table()
            files.write_frame(run_dir / "cv.csv", table)
            files.write_json(run_dir / "cv.json", {**res.summary(), "wall_s": time.perf_counter() - started,
                                                   "per_fold": table.to_dict(orient="records")})
        finally:
            lock.release()
    return res
