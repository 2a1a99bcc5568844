"""The loop's rules, written once for the one-network step and the stacked step alike.

* :func:`check_batch_size` - a batch larger than the training rows is a one-line refusal;
* :func:`budget` - ``[train] epochs`` or ``iterations`` as (max epochs, max steps);
* :func:`divergence` - the one message of a loss that became NaN or infinite.

>>> budget(epochs=10, iterations=None, steps_per_epoch=4)
(10, 40)
>>> budget(epochs=None, iterations=10, steps_per_epoch=4)
(3, 10)
"""

from __future__ import annotations

import math

from nnfin.errors import ConfigError


def check_batch_size(batch_size: int, sampling: str, n_train: int) -> None:
    """Refuse a mini-batch larger than the training rows (``sampling = 'full'`` takes them all)."""
    if sampling != "full" and batch_size > n_train:
        raise ConfigError(f"[train] batch_size = {batch_size} is larger than the {n_train} training rows"
                          " (lower it, or use sampling = 'full')")


def budget(*, epochs: int | None, iterations: int | None, steps_per_epoch: int) -> tuple[int, int]:
    """``(max_epochs, max_steps)``: ``iterations`` (total steps) wins over ``epochs``."""
    if iterations is not None:
        return math.ceil(iterations / steps_per_epoch), iterations
    assert epochs is not None
    return epochs, epochs * steps_per_epoch


def divergence(value: float, epoch: int, step: int, lr: float) -> str:
    """Why training stopped when the loss became ``value`` (NaN or infinite)."""
    return (f"loss became {value} at epoch {epoch}, step {step} (lr = {lr:g}); training stopped - "
            "try a smaller [optim] lr")
