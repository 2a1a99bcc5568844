"""Cross-validation folds trained as batched stacks (:mod:`nnfin.tune.engine`).

:func:`nnfin.tune.cv.evaluate_candidates` sends every candidate the engine supports here and
the rest through :func:`nnfin.tune.cv.run_fold`. Each (candidate, fold) pair is built exactly
as ``run_fold`` builds it: the fold's rows (with the inner early-stopping split when early
stopping is on), scaling fitted on the rows it trains on, the same initial weights
(``seed_everything(train.seed)`` then ``build_model``) and the same batch order. The pairs are
grouped by :func:`nnfin.tune.plan.plan_groups`, trained with
:func:`nnfin.tune.engine.train_group`, and the trained weights are scored on the held-out fold
by the same code as ``run_fold``, so a :class:`~nnfin.tune.cv.FoldResult` is the same either way.

A group trains all its members to the end before any fold is reported, so a pruner sees the
fold values of a batched candidate only afterwards: pruning cannot stop a batched group early
(it still marks the trial pruned). Turn batching off with ``[tune] batched = false`` or
``evaluate_candidates(..., batched=False)``.

>>> from nnfin.config import load_config
>>> from nnfin.tune.cv import make_folds
>>> cfg = load_config(None, ["train.epochs=2", "data.n=200", "train.progress=false"])
>>> out = train_folds([cfg], make_folds(cfg, 3))
>>> len(out.folds[0]), out.describe().split(" (")[0]
(3, 'batched: 3 models in 1 group')
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nnfin.config import Config
from nnfin.data import Data
from nnfin.tune.plan import Plan, plan_groups

log = logging.getLogger("nnfin.tune.batched")


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
    """Fold ``i``'s data for ``cfg`` as :func:`~nnfin.tune.cv.run_fold` builds it: ``(data,
    rows it trains on)``; validation = the inner split only with early stopping on."""
    from nnfin.device import resolve_device
    from nnfin.tune import cv

    train, held, fit, inner = folds.splits[i]
    if not cfg.early_stopping.enabled:
        fit, inner = train, inner[:0]
    device = resolve_device(cfg.train.device, cfg.train.dtype)
    data = cv.data_from_indices(folds.x, folds.y, fit, inner, held, features=folds.features,
                                targets=folds.targets, scale=cfg.data.scale, device=device,
                                dtype=cfg.train.dtype, dydx=folds.dydx, dydx_index=folds.dydx_index)
    return data, fit


def initial_model(cfg: Config, in_dim: int, out_dim: int) -> torch.nn.Module:
    """The network every fold of ``cfg`` starts from, seeded as ``run_fold`` seeds it."""
    from nnfin.api import seed_everything
    from nnfin.models import build_model

    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, in_dim=in_dim, out_dim=out_dim)
    return model.to(dtype=getattr(torch, cfg.train.dtype))


def train_folds(cfgs: Sequence[Config], folds, *, max_bytes: int | None = None) -> BatchedFolds:
    """Train every fold of every config in ``cfgs`` (all supported by the engine) in stacks and
    score each on its held-out fold; ``max_bytes`` caps one stack's memory (default 2 GiB)."""
    from nnfin.tune.cv import score_fold
    from nnfin.tune.engine import Job, train_group

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
        trained = train_group(jobs, return_weights=True)
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
