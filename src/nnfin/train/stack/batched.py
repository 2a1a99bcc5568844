"""Train many candidate configs on many folds at once: batched model selection.

A model-selection sweep trains many small networks (12 configs x 5 folds = 60 trainings of a
1-w-w-1 net, say), each using a sliver of the machine per step. :func:`train_batched` stacks
them (see :mod:`nnfin.train.stack.engine`) and runs one batched forward/backward per mini-batch for
each group of compatible candidates. Each (candidate, fold) pair trains exactly as nnfin's
single-model loop would on that fold: same initial weights (``torch.manual_seed(train.seed)``
then ``build_model``), same batch order (``BatchSampler`` seeded with ``train.seed``), scaling
fitted on the fold's training rows (:func:`nnfin.data.data_from_indices`), the same update
formulas, early stopping and divergence rule; losses are in the same scaled units.

Candidates the engine cannot batch get a reason from :func:`unsupported_reason` (and in
``BatchedRun.unsupported``): train those one by one with the Trainer.

>>> import numpy as np
>>> from nnfin.config import load_config
>>> x = np.linspace(-1.5, 4.7, 400).reshape(-1, 1); y = np.cos(x)
>>> folds = [(np.arange(0, 300), np.arange(300, 400)), (np.arange(100, 400), np.arange(0, 100))]
>>> cands = [load_config(None, [f"model.neurons=[{w},{w}]"]) for w in (6, 16)]
>>> run = train_batched(cands, x, y, folds=folds, epochs=3)
>>> len(run.plan.groups), run.result(1, 0).epochs, run.result(1, 0).best_val_loss > 0
(1, 3, True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nnfin.config import Config, load_config, validate
from nnfin.data import Data, Standardizer, data_from_indices
from nnfin.device import resolve_device
from nnfin.models import build_model
from nnfin.train.loop import Callback
from nnfin.train.stack.engine import Job, JobResult, train_group
from nnfin.train.stack.plan import Plan, PlanGroup
from nnfin.train.stack.plan import plan_groups as _plan

__all__ = ["BatchedRun", "Plan", "PlanGroup", "plan_groups", "train_batched", "unsupported_reason"]

Candidate = Config | dict[str, Any]


def plan_groups(candidates: Sequence[Candidate], *, n_folds: int = 1, n_train: int = 1000,
                n_val: int = 0, in_dim: int = 1, out_dim: int = 1, max_bytes: int | None = None,
                pad_widths: bool | str = "auto") -> Plan:
    """How :func:`train_batched` would split ``candidates`` x ``n_folds`` folds into stacks.

    ``plan.groups`` lists each stack's members ``(candidate, fold)``, widths and estimated
    bytes; ``plan.unsupported`` the candidates to train one by one, with the reason; and
    ``plan.describe()`` says it in a few lines (also logged to ``nnfin.train.stack.batched``).

    >>> cands = [load_config(None, [f"model.neurons=[{w},{w}]"]) for w in (6, 128)]
    >>> plan = plan_groups(cands + [load_config(None, ["optim.name=lbfgs"])], n_folds=5)
    >>> [len(g.members) for g in plan.groups], plan.unsupported
    ([5, 5], {2: "optim.name = 'lbfgs': its line search needs a closure per network"})
    """
    cfgs = [c if isinstance(c, Config) else load_config(c) for c in candidates]
    skip = {i: why for i, c in enumerate(cfgs) if (why := unsupported_reason(c))}
    return _plan(cfgs, n_folds=n_folds, n_train=n_train, n_val=n_val, in_dim=in_dim,
                 out_dim=out_dim, max_bytes=max_bytes, pad_widths=pad_widths, unsupported=skip)


def unsupported_reason(cfg: Config) -> str | None:
    """Why the batched engine cannot train ``cfg`` (train it with the Trainer), or ``None``."""
    if cfg.model.kind == "polynomial":
        return "model.kind = 'polynomial': the batched engine stacks networks (mlp, mlp-low)"
    if cfg.optim.name == "lbfgs":
        return "optim.name = 'lbfgs': its line search needs a closure per network"
    if cfg.optim.name == "sgd" and cfg.optim.nesterov and cfg.optim.momentum == 0:
        return "optim.nesterov = true needs optim.momentum > 0 (torch.optim.SGD refuses it)"
    if getattr(cfg.train, "distributed", False):
        return "train.distributed = true: a batched stack trains in one process"
    es = cfg.early_stopping
    if es.enabled and es.monitor not in ("val_loss", "train_loss"):
        return f"early_stopping.monitor = {es.monitor!r}: only val_loss or train_loss is batched"
    return None


# ------------------------------------------------------------------------------ train


@dataclass
class BatchedRun:
    """Results per (candidate, fold), the plan, the folds' scalers and the wall time."""

    results: list[list[JobResult | None]]  # [candidate][fold]; None where unsupported
    plan: Plan
    configs: list[Config]
    scalers: list[Standardizer | None]  # per fold (scaling fitted on its training rows)
    seconds: float
    unsupported: dict[int, str] = field(default_factory=dict)

    def result(self, candidate: int, fold: int) -> JobResult:
        out = self.results[candidate][fold]
        if out is None:
            raise KeyError(f"candidate {candidate} was not trained in batch: "
                           f"{self.unsupported.get(candidate, 'unknown')}")
        return out


def train_batched(candidates: Sequence[Candidate], x: np.ndarray, y: np.ndarray, *,
                  folds: Sequence[tuple[np.ndarray, np.ndarray]], epochs: int | None = None,
                  batch_size: int | None = None, seed: int | None = None,
                  device: str | None = None, dtype: str | None = None,
                  max_bytes: int | None = None, pad_widths: bool | str = "auto",
                  return_weights: bool = False,
                  callbacks: Sequence[Callback] = ()) -> BatchedRun:
    """Train every supported candidate on every fold; see the module docstring.

    ``x`` (n, in) and ``y`` (n,) or (n, out) are raw arrays; ``folds`` are ``(train_idx,
    val_idx)`` row indices. ``epochs``, ``batch_size``, ``seed``, ``device`` and ``dtype``
    override every candidate's ``[train]`` value when given. With ``return_weights`` each
    result carries the network's state dict (its model class: ``MLP`` or ``MLPLow``).
    ``callbacks`` join every stack's loop (:class:`~nnfin.train.stack.engine.StackTrainer`):
    ``on_epoch_end`` sees each network's logs, e.g. a
    :class:`~nnfin.train.tensorboard.TensorBoardCallback` writes ``network_<job>/train_loss``.
    """
    started = time.perf_counter()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    cfgs = [_override(c, epochs, batch_size, seed, device, dtype) for c in candidates]
    folds = [(np.asarray(tr), np.asarray(va)) for tr, va in folds]
    if not folds:
        raise ValueError("folds is empty: give at least one (train_idx, val_idx) pair")
    n_train = max(len(tr) for tr, _ in folds)
    n_val = max(len(va) for _, va in folds)
    plan = plan_groups(cfgs, n_folds=len(folds), n_train=n_train, n_val=n_val,
                       in_dim=x.shape[1], out_dim=y.shape[1], max_bytes=max_bytes,
                       pad_widths=pad_widths)
    datasets: dict[tuple, Data] = {}
    models: dict[int, torch.nn.Module] = {}
    results: list[list[JobResult | None]] = [[None] * len(folds) for _ in cfgs]
    for group in plan.groups:
        jobs = [Job(cfgs[c], _fold_data(datasets, x, y, folds, f, cfgs[c]),
                    _initial_model(models, c, cfgs[c], x.shape[1], y.shape[1]))
                for c, f in group.members]
        trained = train_group(jobs, return_weights=return_weights, callbacks=callbacks)
        for (c, f), res in zip(group.members, trained, strict=True):
            results[c][f] = res
    scalers = [next((d.scaler for k, d in datasets.items() if k[0] == f), None)
               for f in range(len(folds))]
    return BatchedRun(results, plan, cfgs, scalers, time.perf_counter() - started,
                      dict(plan.unsupported))


def _override(c: Candidate, epochs: int | None, batch_size: int | None, seed: int | None,
              device: str | None, dtype: str | None) -> Config:
    raw = (c if isinstance(c, Config) else load_config(c)).to_dict()
    train = raw.setdefault("train", {})
    if epochs is not None:
        train["epochs"] = epochs
        train.pop("iterations", None)
    for name, value in (("batch_size", batch_size), ("seed", seed), ("device", device),
                        ("dtype", dtype)):
        if value is not None:
            train[name] = value
    return validate(raw)


def _fold_data(cache: dict[tuple, Data], x: np.ndarray, y: np.ndarray,
               folds: list[tuple[np.ndarray, np.ndarray]], fold: int, cfg: Config) -> Data:
    """The fold's tensors, scaled with statistics of its training rows (cached per setting)."""
    device = resolve_device(cfg.train.device, cfg.train.dtype)
    key = (fold, cfg.data.scale, str(device), cfg.train.dtype)
    if key not in cache:
        tr, va = folds[fold]
        cache[key] = data_from_indices(
            x, y, tr, va, np.arange(0), features=[f"x{i}" for i in range(x.shape[1])],
            targets=[f"y{i}" for i in range(y.shape[1])], scale=cfg.data.scale, device=device,
            dtype=cfg.train.dtype)
    return cache[key]


def _initial_model(cache: dict[int, torch.nn.Module], c: int, cfg: Config, in_dim: int,
                   out_dim: int) -> torch.nn.Module:
    """The candidate's initial network, as nnfin builds it: seeded with ``train.seed``."""
    if c not in cache:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = build_model(cfg.model, in_dim=in_dim, out_dim=out_dim)
        cache[c] = model.to(dtype=getattr(torch, cfg.train.dtype))
    return cache[c]
