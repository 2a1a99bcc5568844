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
from nnfin.config import Config, load_config, tune_section
from nnfin.errors import NNFinError
from nnfin.train.folds import CVResult, evaluate_candidates, make_folds


def cross_validate(config: Config | dict | str | Path | None = None, *, folds: int | None = None,
                   overrides: Sequence[str] = (), write: bool = True, progress: bool = False,
                   console: Any = None) -> CVResult:
    """K-fold cross-validation of one configuration (``nnfin cv``); writes ``cv.csv`` and
    ``cv.json`` into a new run folder unless ``write=False``.

    ``folds`` overrides ``[tune] folds``; the metric, seed and inner validation share come
    from ``[tune]`` too.
    """
    extra = [f"tune.folds={folds}"] if folds is not None else []
    cfg = load_config(config, [*overrides, *extra])
    tc = tune_section(cfg)
    plan = make_folds(cfg, tc.folds, seed=tc.seed, inner_val=tc.inner_val)
    bar = None
    if progress and cfg.train.progress:
        from nnfin.tune.progress import SearchProgress

        bar = SearchProgress(console, folds=plan.k)
    run_dir, made, lock = None, False, None
    if write:
        from nnfin.runs import abandon_run_dir, create_run_dir

        run_dir, made = create_run_dir(cfg)
        lock = files.RunLock(run_dir, "nnfin cv").acquire()
    started = time.perf_counter()
    try:
        if run_dir is not None:
            files.write_text(run_dir / "config.toml", cfg.to_toml())
        (res,) = evaluate_candidates(
            [cfg], plan, metric=tc.metric,
            fold_callbacks=(lambda c, i: [bar.epoch_callback(i)]) if bar else None)
        if bar is not None:
            bar.progress.update(bar.fold_task, completed=plan.k)
    except NNFinError:
        if lock is not None:  # a refused config leaves no run folder behind
            lock.release()
            abandon_run_dir(run_dir, made)
        raise
    finally:
        if bar is not None:
            bar.stop()
    res.dir = run_dir
    if progress and console is not None:
        console.print(res.engine_note)
    if run_dir is not None:
        from nnfin.runs import write_json

        try:
            files.write_frame(run_dir / "cv.csv", res.table())
            write_json(run_dir / "cv.json", {**res.summary(), "wall_s": time.perf_counter() - started,
                                             "per_fold": res.table().to_dict(orient="records")})
        finally:
            lock.release()
    return res
