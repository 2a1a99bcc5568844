"""Pick the training device: ``auto`` means cuda, then mps, then cpu.

>>> resolve_device("cpu", "float32")
device(type='cpu')
"""

from __future__ import annotations

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
