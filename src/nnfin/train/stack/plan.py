"""Split candidates x folds into stacks for the batched engine, within a memory budget.

Networks of one stack share activation, depth, optimizer family (gd/sgd, adam/adamw,
rmsprop), loss, sampling, batch size, dtype and device (:func:`nnfin.train.stack.engine.group_key`).
Inside such a key, networks of different widths can share a stack, padded to the widest:
``pad_widths = "auto"`` merges width buckets (narrowest first) only while a rough step-cost
model says one padded stack is cheaper than separate ones, ``True`` always pads, ``False``
never. Each stack is then cut to fit ``max_bytes`` (:func:`estimate_bytes` per network).

>>> from nnfin.config import load_config
>>> cands = [load_config(None, [f"model.neurons=[{w},{w}]"]) for w in (6, 16, 128)]
>>> plan = plan_groups(cands, n_folds=5)
>>> [(len(g.members), g.widths) for g in plan.groups]
[(10, [16, 16]), (5, [128, 128])]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from nnfin.config import Config
from nnfin.train.stack.engine import group_key
from nnfin.train.stack.optimizers import family

log = logging.getLogger("nnfin.train.stack.batched")
DEFAULT_MAX_BYTES = 2 * 1024**3  # per stack: parameters, optimizer state, activations, data
KEY_FIELDS = ("activation", "depth", "optimizer", "loss", "huber_delta", "sampling",
              "batch_size", "dtype", "device", "differential")
# Step-cost model in nanoseconds on one CPU core, fitted to stacks of 20 and 40 sigmoid
# networks 6, 16, 32 and 64 wide (batch 64): a step pays a fixed ~175 us (some 20 kernel
# calls), then per network ~4 us (its share of each batched product's per-matrix setup), ~1 ns
# per activation element (forward, backward), ~1 ns per parameter (gradient, penalty, Adam)
# and ~0.15 ns per multiply-add of its three GEMM passes. The fixed parts dominate small
# networks, so narrow widths pay to share a padded stack (20 networks 6 wide and 20 16 wide:
# one stack of 16 takes ~0.49 ms a step where two take ~0.63 ms); wide ones do not (those 40
# with 20 32 wide: ~1.0 ms a step apart, ~1.4 ms together by the model).
STEP_OVERHEAD, NETWORK_OVERHEAD = 175_000, 4_000
ACT_PASSES, PARAM_PASSES, GEMM_WEIGHT = 1.0, 1.0, 0.15


@dataclass
class PlanGroup:
    """One stack: its shared settings, its (candidate, fold) members and its memory estimate."""

    key: dict[str, Any]
    members: list[tuple[int, int]]
    widths: list[int]  # hidden widths of the stack (the widest member's, per layer)
    bytes_per_model: int
    bytes: int

    def describe(self) -> str:
        k = self.key
        return (f"{len(self.members)} models, {k['activation']} widths {self.widths}, "
                f"{k['optimizer']}, {k['loss']}, batch {k['batch_size']}, {k['dtype']}: "
                f"~{self.bytes / 2**20:.1f} MiB")


@dataclass
class Plan:
    """How candidates x folds were split into stacks, within ``max_bytes`` each."""

    groups: list[PlanGroup]
    unsupported: dict[int, str]  # candidate index -> why it must train one by one
    max_bytes: int

    def describe(self) -> str:
        lines = [f"{len(self.groups)} group(s), budget {self.max_bytes / 2**20:.0f} MiB each"]
        lines += [f"  group {i}: {g.describe()}" for i, g in enumerate(self.groups)]
        lines += [f"  candidate {c}: one by one ({why})" for c, why in self.unsupported.items()]
        return "\n".join(lines)


def estimate_bytes(cfg: Config, widths: Sequence[int], *, n_train: int, n_val: int,
                   in_dim: int = 1, out_dim: int = 1) -> int:
    """Bytes one network of a stack needs: parameters, gradients, optimizer state, masks and the
    best-weights copy; activations of a training step; its validation rows and activations."""
    size = 8 if cfg.train.dtype == "float64" else 4
    dims = [in_dim, *widths, out_dim]
    n_params = sum(i * o + o for i, o in pairwise(dims))
    n_state = {"sgd": 1, "adam": 2, "rmsprop": 2}[family(cfg.optim.name)]
    per_param = 6 + 2 * n_state + 3 + int(cfg.early_stopping.enabled)  # + update temporaries
    batch = _batch(cfg, n_train)
    activations = batch * (in_dim + out_dim + 4 * sum(widths)) + 2 * batch
    if cfg.data.derivatives:  # the autograd graph of the input derivatives and its backward
        activations = 3 * activations + batch * (2 * in_dim + len(cfg.data.derivatives))
    val = n_val * (in_dim + 2 * out_dim + 2 * max(widths, default=1))
    index = 2 * n_train  # the epoch's batch indices (int64)
    return size * (per_param * n_params + activations + val + index)


def step_cost(cfg: Config, widths: Sequence[int], *, n_train: int, in_dim: int = 1,
              out_dim: int = 1) -> float:
    """Rough cost of one network in a stack's step (element operations, see the constants)."""
    dims = [in_dim, *widths, out_dim]
    batch = _batch(cfg, n_train)
    n_params = sum(i * o + o for i, o in pairwise(dims))
    gemm = batch * sum(i * o for i, o in pairwise(dims))
    return (NETWORK_OVERHEAD + ACT_PASSES * batch * sum(widths) + PARAM_PASSES * n_params
            + GEMM_WEIGHT * gemm)


def plan_groups(candidates: Sequence[Config], *, n_folds: int = 1, n_train: int = 1000,
                n_val: int = 0, in_dim: int = 1, out_dim: int = 1, max_bytes: int | None = None,
                pad_widths: bool | str = "auto",
                unsupported: dict[int, str] | None = None) -> Plan:
    """Partition candidates x folds into stacks; ``unsupported`` candidates are left out.

    Members of a group are ordered by width, then candidate, then fold.
    """
    if pad_widths not in (True, False, "auto"):
        raise ValueError(f"pad_widths must be True, False or 'auto', got {pad_widths!r}")
    budget = int(max_bytes) if max_bytes is not None else DEFAULT_MAX_BYTES
    skip = dict(unsupported or {})
    dims = {"n_train": n_train, "in_dim": in_dim, "out_dim": out_dim}
    by_key: dict[tuple, dict[tuple[int, ...], list[int]]] = {}
    for i, cfg in enumerate(candidates):
        if i not in skip:
            buckets = by_key.setdefault(group_key(cfg), {})
            buckets.setdefault(tuple(cfg.model.neurons), []).append(i)
    groups: list[PlanGroup] = []
    for key, buckets in by_key.items():
        ordered = sorted(buckets.items(), key=lambda kv: (max(kv[0], default=0), kv[0]))
        for widths, members in _merge(ordered, candidates, n_folds, pad_widths, dims):
            groups += _split(key, widths, members, candidates, n_folds, n_train, n_val,
                             in_dim, out_dim, budget)
    plan = Plan(groups, skip, budget)
    for line in plan.describe().splitlines():
        log.info(line)
    return plan


def _batch(cfg: Config, n_train: int) -> int:
    return n_train if cfg.train.sampling == "full" else min(cfg.train.batch_size, n_train)


def _merge(ordered: list[tuple[tuple[int, ...], list[int]]], cfgs: Sequence[Config],
           n_folds: int, pad_widths: bool | str, dims: dict[str, int]
           ) -> list[tuple[list[int], list[int]]]:
    """Width buckets -> ``[(stack widths, candidates)]``: merged as ``pad_widths`` says."""
    if pad_widths is False:
        return [(list(w), m) for w, m in ordered]

    def cost(widths: list[int], members: list[int]) -> float:
        return STEP_OVERHEAD + n_folds * sum(step_cost(cfgs[i], widths, **dims) for i in members)

    merged = [(list(ordered[0][0]), list(ordered[0][1]))]
    for widths, members in ordered[1:]:
        last_w, last_m = merged[-1]
        both = np.maximum(last_w, widths).tolist()
        if pad_widths is True or cost(both, last_m + members) <= (
                cost(last_w, last_m) + cost(list(widths), members)):
            merged[-1] = (both, last_m + members)
        else:
            merged.append((list(widths), list(members)))
    return merged


def _split(key: tuple, widths: list[int], members: list[int], cfgs: Sequence[Config],
           n_folds: int, n_train: int, n_val: int, in_dim: int, out_dim: int,
           budget: int) -> list[PlanGroup]:
    """Cut one stack into groups that fit the budget (always at least one network each)."""
    size = 8 if cfgs[members[0]].train.dtype == "float64" else 4
    shared = size * n_folds * (n_train + n_val) * (in_dim + out_dim)  # the folds' data
    per = max(estimate_bytes(cfgs[i], widths, n_train=n_train, n_val=n_val, in_dim=in_dim,
                             out_dim=out_dim) for i in members)
    fit = max(1, (budget - shared) // per)
    jobs = [(i, f) for i in members for f in range(n_folds)]
    named = dict(zip(KEY_FIELDS, key, strict=True))
    out = []
    for start in range(0, len(jobs), fit):
        chunk = jobs[start:start + fit]
        chunk_widths = np.max([cfgs[i].model.neurons for i, _ in chunk], axis=0).tolist() \
            if widths else []
        out.append(PlanGroup(named, chunk, chunk_widths, per, shared + per * len(chunk)))
    return out
