"""Data-parallel training with PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc-per-node 2 -m nnfin fit CONFIG --distributed`` starts one process per rank;
each draws the same global batch (same sampler seed) and trains on its slice of it, DDP
averages the gradients, so one step equals a single-process step on the global batch (exactly
when the batch splits evenly across ranks). Only rank 0 writes the run folder and checkpoints.
The backend is gloo on the CPU and NCCL on CUDA. On several machines, give torchrun
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint HOST:PORT`` (see the README).

>>> is_main()
True
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from nnfin.errors import ConfigError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun prepared; returns this rank's device."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("[train] distributed = true needs torchrun, e.g. "
                          "torchrun --nproc-per-node 2 -m nnfin fit CONFIG --distributed")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model DDP trains (parameters stay those of ``model``)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch of row indices."""
    return idx.tensor_split(world_size())[rank()]


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    if active():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world_size()
    return value
