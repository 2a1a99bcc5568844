"""K-fold cross-validation of configurations, as the lecture ranks model candidates.

The training part of the configured split (train + validation) is cut into K folds with
scikit-learn's ``KFold`` (shuffled, seeded); the test part stays held out and untouched. For
each fold the model trains on the other K-1 folds and is scored on the held-out one. Scaling is
fitted on the fold's training rows only. With early stopping on, a seeded share
(``[tune] inner_val``) of the fold's training rows is set aside to monitor - never the
held-out fold.

:func:`evaluate_candidates` scores a list of configurations on the same folds; it is the one
place ``nnfin cv`` and a search call. Every candidate the stacked engine supports trains with
all its folds - and with the other candidates - in stacks (:func:`train_folds`, through
:mod:`nnfin.train.stack`); the others fold by fold through the :class:`~nnfin.train.loop.Trainer`
(:func:`run_fold`). Each (candidate, fold) pair is built the same way on both paths (the fold's
rows, scaling fitted on the rows it trains on, ``seed_everything(train.seed)`` then the model,
the same batch order) and scored by :func:`score_fold`, so a :class:`FoldResult` is the same
either way. A stacked group trains all its members to the end before any fold is reported, so
a pruner sees a stacked candidate's folds only afterwards.

>>> from nnfin.config import load_config
>>> cfg = load_config(None, ["train.epochs=2", "data.n=200", "train.progress=false"])
>>> [r.mean > 0 for r in evaluate_candidates([cfg], make_folds(cfg, 3))]
[True]
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nnfin.config import Config, tune_section
from nnfin.data import Data, data_from_indices, derivative_feature_index, load_samples, split_indices
from nnfin.errors import ConfigError, DataError
from nnfin.train.stack.plan import Plan, plan_groups

METRIC_KEYS = {"val_mse": "mse", "val_rmse": "rmse", "val_mae": "mae", "val_r2": "r2",
               "val_max_abs_error": "max_abs_error", "val_loss": "loss"}


def maximize(metric: str) -> bool:
    """Whether larger is better for ``metric`` (only R²)."""
    return metric == "val_r2"


@dataclass
class Folds:
    """Raw arrays and, per fold, row indices: ``(train, held_out, fit, inner_val)``.

    ``train`` = ``fit`` + ``inner_val``; ``inner_val`` is used only when early stopping is on.
    """

    x: np.ndarray  # (n, in_dim), float64, data units
    y: np.ndarray  # (n, out_dim)
    features: list[str]
    targets: list[str]
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    test: np.ndarray  # the held-out test part of the configured split, never used here
    dydx: np.ndarray | None = None  # (n, k) derivative targets for differential training
    dydx_index: list[int] | None = None

    @property
    def k(self) -> int:
        return len(self.splits)


def make_folds(cfg: Config, k: int, *, seed: int = 0, inner_val: float = 0.15,
               arrays: tuple | None = None, cv: str | None = None) -> Folds:
    """Cut the training part of ``cfg``'s split into ``k`` folds.

    ``cv`` (default ``[tune] cv``): ``"kfold"`` is scikit-learn's ``KFold``, shuffled and seeded
    (in row order, unshuffled, with ``[data] shuffle = false``); ``"time-series"`` is
    ``TimeSeriesSplit``: fold ``i`` trains on the rows before its held-out block. With ordered
    rows (``[data] shuffle = false`` or time-series folds) the inner validation rows are the
    last ``inner_val`` share of each fold's training rows, else a seeded random share.
    """
    from sklearn.model_selection import KFold, TimeSeriesSplit

    cv = tune_section(cfg).cv if cv is None else cv
    if cv == "time-series" and cfg.data.shuffle:
        raise ConfigError("[tune] cv = 'time-series' needs ordered rows: set [data] shuffle = false "
                          "(a shuffled split scatters the test rows through the past)")
    if arrays is not None:
        x, y, features, targets, dydx = (*arrays, None)[:5]
    else:
        x, y, features, targets, dydx = load_samples(cfg.data)
    idx_train, idx_val, idx_test = split_indices(len(x), cfg.data.split, cfg.data.seed,
                                                 shuffle=cfg.data.shuffle)
    pool = np.sort(np.concatenate([idx_train, idx_val]))
    if k < 2:
        raise ConfigError(f"[tune] folds = {k!r} must be at least 2")
    if k > len(pool):
        raise DataError(f"[tune] folds = {k!r} is more than the {len(pool)} training rows "
                        f"(train + validation of [data] split = {cfg.data.split!r}); lower folds")
    if cv == "time-series" and k == len(pool):  # the first fold needs a block to train on
        raise DataError(f"[tune] folds = {k!r} with cv = 'time-series' needs more than the {len(pool)} "
                        f"training rows (train + validation of [data] split = {cfg.data.split!r}); "
                        "lower folds")
    ordered = cv == "time-series" or not cfg.data.shuffle
    splitter = TimeSeriesSplit(n_splits=k) if cv == "time-series" else \
        KFold(n_splits=k) if ordered else KFold(n_splits=k, shuffle=True, random_state=seed)
    splits = []
    for i, (tr, ho) in enumerate(splitter.split(pool)):
        train, held = pool[tr], pool[ho]
        n_val = max(1, round(inner_val * len(train)))
        if ordered:  # monitor the latest rows: never shuffled
            splits.append((train, held, train[:len(train) - n_val], train[len(train) - n_val:]))
            continue
        perm = np.random.default_rng([seed, i]).permutation(train)
        splits.append((train, held, np.sort(perm[n_val:]), np.sort(perm[:n_val])))
    d_index = derivative_feature_index(cfg.data, features) if dydx is not None else None
    return Folds(x, y, list(features), list(targets), splits, idx_test, dydx, d_index)


# ---------------------------------------------------------------------------- results


@dataclass
class FoldResult:
    """One fold: metrics on its held-out rows (data units; ``loss`` in the model's units)."""

    fold: int
    metrics: dict[str, float]
    status: str
    epochs: int
    time_s: float
    n_train: int
    n_held_out: int
    restored_epoch: int | None = None


@dataclass
class CVResult:
    """The folds of one configuration and the mean ± std of ``metric`` over them."""

    config: Config
    metric: str
    folds: list[FoldResult] = field(default_factory=list)
    dir: Path | None = None
    engine: str = "trainer"  # "batched" (stacked with other folds/candidates) or "trainer"
    engine_note: str = ""  # e.g. "batched: 15 models in 3 groups", or why it ran one by one

    def values(self, metric: str | None = None) -> np.ndarray:
        key = METRIC_KEYS[metric or self.metric]
        return np.array([f.metrics[key] for f in self.folds], dtype=float)

    @property
    def mean(self) -> float:
        """Mean of ``metric`` over all folds: infinite when a fold diverged, so a search ranks
        such a configuration last (:attr:`finite_mean` leaves those folds out)."""
        return _mean(self.values()) if self.folds else math.nan

    @property
    def std(self) -> float:  # population std over folds, as scikit-learn's std_test_score
        return _std(self.values()) if self.folds else math.nan

    @property
    def diverged_folds(self) -> list[int]:
        """Fold numbers (from 1) whose training diverged or whose metric is not finite."""
        return [f.fold + 1 for f in self.folds if _diverged(f, METRIC_KEYS[self.metric])]

    def finite_values(self, metric: str | None = None) -> np.ndarray:
        """``metric`` on the folds that did not diverge."""
        key = METRIC_KEYS[metric or self.metric]
        return np.array([f.metrics[key] for f in self.folds if not _diverged(f, key)], dtype=float)

    @property
    def finite_mean(self) -> float:
        """Mean of ``metric`` over the folds that did not diverge (NaN when all did)."""
        return _mean(self.finite_values())

    @property
    def finite_std(self) -> float:
        return _std(self.finite_values())

    @property
    def status(self) -> str:
        """``finished``, ``diverged`` (every fold) or ``partly-diverged``."""
        n = len(self.diverged_folds)
        return "finished" if n == 0 else "diverged" if n == len(self.folds) else "partly-diverged"

    @property
    def time_s(self) -> float:
        return sum(f.time_s for f in self.folds)

    def table(self) -> pd.DataFrame:
        """One row per fold: held-out metrics, epochs, status, time; folds numbered from 1, as
        ``nnfin cv`` prints them and ``cv.csv`` holds them."""
        return pd.DataFrame([{"fold": f.fold + 1, **{f"val_{k}": v for k, v in f.metrics.items()},
                              "epochs": f.epochs, "restored_epoch": f.restored_epoch,
                              "status": f.status, "n_train": f.n_train,
                              "n_held_out": f.n_held_out, "time_s": f.time_s} for f in self.folds])

    def summary(self) -> dict[str, Any]:
        """Means and stds over the folds that did not diverge (``None`` when all did), the
        diverged folds and the status; plain JSON (no infinities)."""
        out: dict[str, Any] = {"metric": self.metric, "status": self.status,
                               "mean": _number(self.finite_mean), "std": _number(self.finite_std),
                               "folds": len(self.folds), "diverged_folds": self.diverged_folds,
                               "time_s": self.time_s, "engine": self.engine,
                               "engine_note": self.engine_note}
        for name in METRIC_KEYS:
            vals = self.finite_values(name)
            out[name] = {"mean": _number(_mean(vals)), "std": _number(_std(vals))}
        return out


def _diverged(fold: FoldResult, key: str) -> bool:
    return fold.status == "diverged" or not math.isfinite(fold.metrics[key])


def _mean(values: np.ndarray) -> float:
    if not len(values):
        return math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.mean(values))


def _std(values: np.ndarray) -> float:
    if not len(values):
        return math.nan
    if not np.isfinite(values).all():  # inf - inf: no spread to speak of
        return math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.std(values))


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------- training


def run_fold(cfg: Config, folds: Folds, i: int, *, callbacks: Sequence[Any] = ()) -> FoldResult:
    """Train ``cfg`` on fold ``i``'s training rows and score it on its held-out rows."""
    from nnfin.device import resolve_device
    from nnfin.models import build_model
    from nnfin.train.callbacks import EarlyStopping
    from nnfin.train.loop import Trainer, seed_everything

    train, held, fit, inner = folds.splits[i]
    es = cfg.early_stopping
    if not es.enabled:
        fit, inner = train, inner[:0]
    device = resolve_device(cfg.train.device, cfg.train.dtype)
    data = data_from_indices(folds.x, folds.y, fit, inner, held, features=folds.features,
                             targets=folds.targets, scale=cfg.data.scale, device=device,
                             dtype=cfg.train.dtype, dydx=folds.dydx, dydx_index=folds.dydx_index)
    seed_everything(cfg.train.seed)  # every fold starts from the same initial weights
    model = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim)
    model = model.to(device=device, dtype=getattr(torch, cfg.train.dtype))
    cbs = list(callbacks)
    stopper = EarlyStopping.from_config(es)
    if stopper is not None:
        cbs.insert(0, stopper)
    trainer = Trainer(model, data, cfg, callbacks=cbs)
    state = trainer.fit()
    if state.status == "interrupted":
        raise KeyboardInterrupt
    return score_fold(cfg, folds, i, data, model, status=state.status, epochs=state.epoch,
                      time_s=state.elapsed, n_train=len(fit), restored_epoch=state.restored_epoch)


def score_fold(cfg: Config, folds: Folds, i: int, data: Any, model: torch.nn.Module, *, status: str,
               epochs: int, time_s: float, n_train: int,
               restored_epoch: int | None = None) -> FoldResult:
    """Metrics of a model trained on fold ``i`` on its held-out rows (``data``'s test split)."""
    from nnfin.metrics import regression_metrics
    from nnfin.runs import Run
    from nnfin.train.losses import make_loss

    held = folds.splits[i][1]
    if status == "diverged":
        metrics = {k: (-math.inf if k == "r2" else math.inf) for k in METRIC_KEYS.values()}
        metrics["n"] = len(held)
    else:
        x_held, y_held = data.split("test", scaled=False)
        run = Run(cfg, model, data.scaler, folds.features, folds.targets)
        metrics = regression_metrics(y_held.double().cpu().numpy(), run.predict(x_held))
        loss_fn = make_loss(cfg.train.loss, huber_delta=cfg.train.huber_delta)
        x, y = data.split("test")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics["loss"] = float(loss_fn(model(x), y))
        model.train(was_training)
    return FoldResult(i, metrics, status, epochs, round(time_s, 4), n_train, len(held),
                      restored_epoch)


FoldHook = Callable[[int, FoldResult, float], bool]


def evaluate_candidates(cfgs: Sequence[Config], folds: Folds, *, metric: str = "val_mse",
                        on_fold: FoldHook | None = None,
                        fold_callbacks: Callable[[int, int], Sequence[Any]] | None = None,
                        batched: bool | None = None, max_bytes: int | None = None,
                        stack_callbacks: Callable[[], Sequence[Any]] | None = None,
                        ) -> list[CVResult]:
    """Cross-validate each configuration on the same ``folds``.

    ``on_fold(candidate, fold_result, running_mean)`` runs after each fold; returning ``False``
    stops that candidate (pruning). ``fold_callbacks(candidate, fold)`` gives extra training
    callbacks (e.g. a progress bar) to candidates trained one by one, ``stack_callbacks()``
    to each stack of the batched engine (its callbacks see every network's epoch logs).

    With ``batched`` (default: each config's ``[tune] batched``, on) every candidate the
    batched engine supports trains with all its folds - and with the other candidates - in
    stacks (:mod:`nnfin.train.folds`, at most ``max_bytes`` each); its folds are reported
    to ``on_fold`` once its group is done, so pruning cannot stop a batched group early. The
    others train one by one with the Trainer. ``CVResult.engine`` says which path each took.
    """
    from nnfin.train.stack.batched import unsupported_reason

    notes: dict[int, str] = {}
    stacked: list[int] = []
    for c, cfg in enumerate(cfgs):
        wanted = tune_section(cfg).batched if batched is None else batched
        why = unsupported_reason(cfg) if wanted else "batching turned off ([tune] batched = false)"
        if why is None:
            stacked.append(c)
        else:
            notes[c] = f"one by one: {why}"
    if max_bytes is None and cfgs:
        max_bytes = tune_section(cfgs[0]).batch_memory_mb * 2**20
    done = train_folds([cfgs[c] for c in stacked], folds, max_bytes=max_bytes,
                       callbacks=stack_callbacks)
    pre = {c: done.folds[j] for j, c in enumerate(stacked)}
    results = []
    for c, cfg in enumerate(cfgs):
        res = CVResult(cfg, metric)
        if c in pre:
            res.engine, res.engine_note = "batched", done.describe()
        else:
            res.engine_note = notes[c]
        for i in range(folds.k):
            if c in pre:
                res.folds.append(pre[c][i])
            else:
                extra = fold_callbacks(c, i) if fold_callbacks else ()
                res.folds.append(run_fold(cfg, folds, i, callbacks=extra))
            if on_fold is not None and not on_fold(c, res.folds[-1], res.mean):
                break
        results.append(res)
    return results


# ------------------------------------------------------------ folds trained as stacks

log = logging.getLogger("nnfin.train.folds")


@dataclass
class BatchedFolds:
    """Fold results per batched candidate (index into the candidates given), and the plan."""

    folds: dict[int, list] = field(default_factory=dict)  # candidate -> [FoldResult per fold]
    plan: Plan | None = None
    n_models: int = 0
    seconds: float = 0.0

    @property
    def n_groups(self) -> int:
        return len(self.plan.groups) if self.plan is not None else 0

    def describe(self) -> str:
        """E.g. ``batched: 60 models in 2 groups (40 x [16, 16] ~2.5 MiB, 20 x [32, 32] ~2.7 MiB;
        budget 2048 MiB each)``."""
        s = "" if self.n_groups == 1 else "s"
        text = f"batched: {self.n_models} models in {self.n_groups} group{s}"
        if self.plan is not None and self.plan.groups and self.n_groups <= 6:
            parts = ", ".join(f"{len(g.members)} x {g.widths} ~{g.bytes / 2**20:.1f} MiB"
                              for g in self.plan.groups)
            text += f" ({parts}; budget {self.plan.max_bytes / 2**20:.0f} MiB each)"
        return text


def fold_data(cfg: Config, folds, i: int) -> tuple[Data, np.ndarray]:
    """Fold ``i``'s data for ``cfg`` as :func:`~nnfin.train.folds.run_fold` builds it: ``(data,
    rows it trains on)``; validation = the inner split only with early stopping on."""
    from nnfin.device import resolve_device

    train, held, fit, inner = folds.splits[i]
    if not cfg.early_stopping.enabled:
        fit, inner = train, inner[:0]
    device = resolve_device(cfg.train.device, cfg.train.dtype)
    data = data_from_indices(folds.x, folds.y, fit, inner, held, features=folds.features,
                                targets=folds.targets, scale=cfg.data.scale, device=device,
                                dtype=cfg.train.dtype, dydx=folds.dydx, dydx_index=folds.dydx_index)
    return data, fit


def initial_model(cfg: Config, in_dim: int, out_dim: int) -> torch.nn.Module:
    """The network every fold of ``cfg`` starts from, seeded as ``run_fold`` seeds it."""
    from nnfin.models import build_model
    from nnfin.train.loop import seed_everything

    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, in_dim=in_dim, out_dim=out_dim)
    return model.to(dtype=getattr(torch, cfg.train.dtype))


def train_folds(cfgs: Sequence[Config], folds, *, max_bytes: int | None = None,
                callbacks: Callable[[], Sequence[Any]] | None = None) -> BatchedFolds:
    """Train every fold of every config in ``cfgs`` (all supported by the engine) in stacks and
    score each on its held-out fold; ``max_bytes`` caps one stack's memory (default 2 GiB);
    ``callbacks()`` gives each stack's training callbacks."""
    from nnfin.train.stack.engine import Job, train_group

    out = BatchedFolds()
    if not cfgs:
        return out
    started = time.perf_counter()
    k = folds.k
    n_fit = max(len(s[0]) for s in folds.splits)
    n_inner = max(len(s[3]) for s in folds.splits)
    any_es = any(c.early_stopping.enabled for c in cfgs)
    in_dim, out_dim = folds.x.shape[1], folds.y.shape[1]
    plan = plan_groups(list(cfgs), n_folds=k, n_train=n_fit, n_val=n_inner if any_es else 0,
                       in_dim=in_dim, out_dim=out_dim, max_bytes=max_bytes)
    cache: dict[tuple, tuple[Data, np.ndarray]] = {}
    models: dict[int, torch.nn.Module] = {}
    scorers: dict[int, torch.nn.Module] = {}

    def data_for(c: int, i: int) -> tuple[Data, np.ndarray]:
        cfg = cfgs[c]
        key = (i, cfg.early_stopping.enabled, cfg.data.scale, cfg.train.device, cfg.train.dtype)
        if key not in cache:
            cache[key] = fold_data(cfg, folds, i)
        return cache[key]

    results: dict[int, list] = {c: [None] * k for c in range(len(cfgs))}
    for group in plan.groups:
        tick = time.perf_counter()
        jobs = []
        for c, i in group.members:
            data = data_for(c, i)[0]
            if c not in models:
                models[c] = initial_model(cfgs[c], data.in_dim, data.out_dim)
            jobs.append(Job(cfgs[c], data, models[c]))
        trained = train_group(jobs, return_weights=True,
                              callbacks=list(callbacks()) if callbacks is not None else ())
        share = (time.perf_counter() - tick) / len(jobs)
        for (c, i), job, res in zip(group.members, jobs, trained, strict=True):
            if c not in scorers:  # one model per candidate to score its folds with
                scorers[c] = copy.deepcopy(models[c]).to(device=job.data.x_train.device)
            model = scorers[c]
            model.load_state_dict(res.state_dict)
            fit = data_for(c, i)[1]
            results[c][i] = score_fold(cfgs[c], folds, i, job.data, model, status=res.status,
                                       epochs=res.epochs, time_s=share, n_train=len(fit),
                                       restored_epoch=res.restored_epoch)
        out.n_models += len(jobs)
    out.folds, out.plan = results, plan
    out.seconds = time.perf_counter() - started
    log.info("%s (%.2f s)", out.describe(), out.seconds)
    return out
