"""Pick the training device: ``auto`` means cuda, then mps, then cpu.

>>> resolve_device("cpu", "float32")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from nnfin.errors import ConfigError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str = "auto", dtype: str = "float32") -> torch.device:
    """Turn ``[train] device`` into a ``torch.device`` that exists on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available() and dtype != "float64":
            name = "mps"
        else:
            name = "cpu"
    base, _, index = name.partition(":")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"[train] device = {name!r} is not available on this machine "
                              "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"[train] device = {name!r}: only {torch.cuda.device_count()} "
                              "CUDA device(s) here")
    elif base == "mps":
        if not _mps_available():
            raise ConfigError(f"[train] device = {name!r} is not available on this machine; "
                              "use 'auto' or 'cpu'")
        if dtype == "float64":
            raise ConfigError("[train] dtype = 'float64' is not supported on device 'mps'; "
                              "use float32 or device = 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"[train] device = {name!r} is not a device: {exc}") from None


# multiply-adds of one forward pass (parameters x rows of a batch) below which a training step
# is too small to share between threads: splitting it costs more than it saves, and on a busy
# machine OpenMP threads waiting for each other make it many times slower (benchmarks/threads.py)
SMALL_STEP = 2**23


def training_threads(setting: int | str, *, work: float, device: torch.device) -> int | None:
    """How many CPU threads a training loop uses: ``[train] threads``, or for ``auto`` one
    thread when a step's ``work`` (parameters x batch rows) is below :data:`SMALL_STEP`, and
    above it torch's own choice less the cores other processes keep busy (the load average),
    at least one; ``None`` (leave torch as it is) off the CPU.

    >>> training_threads("auto", work=100 * 64, device=torch.device("cpu"))
    1
    >>> training_threads(3, work=1e9, device=torch.device("cpu"))
    3
    """
    if device.type != "cpu":
        return None
    if setting == "auto":
        if work < SMALL_STEP:
            return 1
        default = torch.get_num_threads()
        return max(1, min(default, default - _busy_cores()))
    return int(setting)


def _busy_cores() -> int:
    """Cores other processes keep busy: the one-minute load average, rounded (0 where the
    system does not report one)."""
    try:
        return int(os.getloadavg()[0] + 0.5)
    except (OSError, AttributeError):
        return 0


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` and restore the caller's count
    afterwards (``None``: unchanged)."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
