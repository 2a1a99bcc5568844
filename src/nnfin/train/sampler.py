"""Mini-batch index sampling on the training device (no per-sample Python work).

* ``shuffle`` - one ``randperm`` per epoch, cut into batches (the last one may be smaller);
* ``choice``  - the lecture's ``np.random.choice(N, batch, replace=False)`` every step: each
  batch is a uniformly random subset, independent of the others. Drawn for many steps at once
  as the top-``batch`` of uniform keys per row, which is exactly sampling without replacement;
* ``full``    - the whole training set every step.

The sampler owns a ``torch.Generator``; its state at the start of an epoch fully determines
that epoch's batches, which is what makes a resumed run replay the same batches.

>>> s = BatchSampler(10, 4, "shuffle", seed=0)
>>> [b.numel() for b in s.epoch()]
[4, 4, 2]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

_BLOCK_ELEMENTS = 1 << 24  # cap on the random keys drawn at once in "choice" mode


class BatchSampler:
    """Yields index tensors (on ``device``) for one epoch at a time."""

    def __init__(self, n: int, batch_size: int, mode: str = "shuffle", *, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.n, self.mode, self.device = n, mode, torch.device(device)
        self.batch_size = n if mode == "full" else batch_size
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.epoch_state: torch.Tensor | None = None  # generator state when the epoch began

    @property
    def steps_per_epoch(self) -> int:
        if self.mode == "full":
            return 1
        if self.mode == "choice":
            return max(1, self.n // self.batch_size)
        return math.ceil(self.n / self.batch_size)

    def epoch(self, start: int = 0) -> Iterator[torch.Tensor | None]:
        """Batches of one epoch from step ``start``; ``None`` means "all rows" (full batch)."""
        self.epoch_state = self.generator.get_state()
        steps = self.steps_per_epoch
        if self.mode == "full":
            yield from (None for _ in range(start, steps))
        elif self.mode == "shuffle":
            perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            for s in range(start, steps):
                yield perm[s * self.batch_size:(s + 1) * self.batch_size]
        else:
            rows = max(1, _BLOCK_ELEMENTS // self.n)
            for first in range(0, steps, rows):
                count = min(rows, steps - first)
                keys = torch.rand(count, self.n, generator=self.generator, device=self.device)
                block = keys.topk(self.batch_size, dim=1, sorted=False).indices  # (count, batch)
                for r in range(max(0, start - first), count):
                    yield block[r]

    def rewind_epoch(self) -> None:
        """Go back to the state at the start of the current epoch (used by exact resume)."""
        if self.epoch_state is not None:
            self.generator.set_state(self.epoch_state)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(),
                "epoch_state": self.epoch_state, "mode": self.mode, "n": self.n,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.epoch_state = state.get("epoch_state")
