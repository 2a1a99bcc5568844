"""Data: build X, y from the config, split train/val/test, scale with training statistics.

>>> from nnfin.config import load_config
>>> data = build_data(load_config(None).data, device="cpu", dtype="float32")
>>> data.x_train.shape[1], data.features
(1, ['x'])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nnfin.config import DataConfig
from nnfin.data.derivatives import derivative_feature_index
from nnfin.data.samples import load_samples
from nnfin.data.scaling import Standardizer
from nnfin.errors import DataError

__all__ = ["Data", "Standardizer", "build_data", "check_memory", "data_from_indices",
           "derivative_feature_index", "load_arrays", "load_samples", "split_indices"]


@dataclass
class Data:
    """Tensors on the training device; ``*_s`` tensors are the scaled ones the model sees."""

    x_train: torch.Tensor  # (n_train, in_dim), original units
    y_train: torch.Tensor  # (n_train, out_dim)
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    features: list[str]
    targets: list[str]
    scaler: Standardizer | None
    digest: str  # sha256 of the raw arrays: resume refuses other data
    scaled: dict[str, torch.Tensor] = field(default_factory=dict)
    # differential training: scaled dy/dx targets per split, (n, k), for inputs ``dydx_index``
    dydx: dict[str, torch.Tensor] = field(default_factory=dict)
    dydx_index: list[int] = field(default_factory=list)

    @property
    def in_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def out_dim(self) -> int:
        return self.y_train.shape[1]

    def split(self, name: str, *, scaled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``train``, ``val`` or ``test``, scaled for the model by default."""
        if scaled:
            return self.scaled[f"x_{name}"], self.scaled[f"y_{name}"]
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Raw float64 arrays ``x (n, in), y (n, out)`` and column names for a ``[data]`` table."""
    return load_samples(cfg)[:4]


def split_indices(n: int, fractions: list[float], seed: int, *, shuffle: bool = True) -> list[np.ndarray]:
    """Sorted row indices of train, validation and test: a seeded permutation cut by ``fractions``.

    With ``shuffle=False`` nothing is permuted: train is the first rows, then validation, then
    test (time series: every validation and test row comes after every training row).

    >>> [a.tolist() for a in split_indices(8, [0.5, 0.25, 0.25], 0, shuffle=False)]
    [[0, 1, 2, 3], [4, 5], [6, 7]]
    """
    perm = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    n_train = n - n_val - n_test
    return [np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]),
            np.sort(perm[n_train + n_val:])]


def digest_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def check_memory(cfg: DataConfig, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32") -> int:
    """Refuse generated data (``[data] n``) that cannot fit in memory, before generating it.

    Per row: the generator's own peak, or the pipeline's if larger (the float64 arrays, their
    split copies, the digest and the raw and scaled tensors); tensors on a CUDA device are
    checked against its memory too. Files are read as they are. Returns the host bytes.

    >>> check_memory(DataConfig(kind="cos", n=1000))
    80000
    """
    from nnfin.config import BUILTIN_TARGETS
    from nnfin.data.finance_bridge import FINANCE_KINDS

    if cfg.kind not in BUILTIN_TARGETS and cfg.kind not in FINANCE_KINDS:
        return 0
    itemsize = (getattr(torch, dtype) if isinstance(dtype, str) else dtype).itemsize
    if cfg.kind in BUILTIN_TARGETS:
        columns = 2 + len(cfg.derivatives)
    else:
        from nnfin.finance.datasets import FEATURES, TARGETS

        target = [cfg.target] if isinstance(cfg.target, str) else cfg.target or TARGETS[cfg.kind]
        columns = len(cfg.features or FEATURES[cfg.kind]) + len(target) + len(cfg.derivatives)
    row_bytes = columns * (3 * 8 + 2 * itemsize) + 2 * 8  # + the permutation and split indices
    if cfg.kind in BUILTIN_TARGETS:
        from nnfin.data.functions import check_memory as check_samples

        host = check_samples(cfg.n, row_bytes=row_bytes)
    else:
        from nnfin.finance.datasets import check_memory as check_generation

        options = dict(cfg.options)
        greeks = bool(options.pop("greeks", False))
        host = check_generation(cfg.kind, cfg.n, options, greeks=greeks, row_bytes=row_bytes,
                                fields={"n": "[data] n", "N": "[data.options] N",
                                        "chunk": "[data.options] chunk"})
    if str(device).startswith("cuda"):
        from nnfin.memory import format_count, require

        require("[data] n", cfg.n, cfg.n * columns * 2 * itemsize, "the data", device=device,
                detail=f"{format_count(cfg.n)} rows x {columns} columns x {itemsize} bytes, raw and scaled")
    return host


def build_data(
    cfg: DataConfig, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
    arrays: tuple[np.ndarray, np.ndarray, list[str], list[str]] | None = None,
    frame: Any = None,
) -> Data:
    """Load, split (seeded), scale on the training part and move everything to ``device``.

    ``frame``: in-memory samples (a DataFrame, see :func:`nnfin.data.samples.memory_frame`)
    read in place of ``[data]``'s source.
    """
    if arrays is None and frame is None:
        check_memory(cfg, device=device, dtype=dtype)
    x, y, features, targets, d = (*arrays, None) if arrays is not None else \
        load_samples(cfg, frame=frame)
    n = x.shape[0]
    if n == 0:
        raise DataError("[data] holds no samples")
    idx_train, idx_val, idx_test = split_indices(n, cfg.split, cfg.seed, shuffle=cfg.shuffle)
    if len(idx_train) < 2:
        raise DataError(f"[data] split = {cfg.split!r} leaves {len(idx_train)} training rows of {n}")
    d_index = derivative_feature_index(cfg, features) if d is not None else None
    return data_from_indices(x, y, idx_train, idx_val, idx_test, features=features, targets=targets,
                             scale=cfg.scale, device=device, dtype=dtype, dydx=d, dydx_index=d_index)


def data_from_indices(
    x: np.ndarray, y: np.ndarray, idx_train: np.ndarray, idx_val: np.ndarray, idx_test: np.ndarray,
    *, features: list[str], targets: list[str], scale: bool = True,
    device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
    dydx: np.ndarray | None = None, dydx_index: list[int] | None = None,
) -> Data:
    """A :class:`Data` from raw float64 arrays and row indices (used by the split, by K-fold
    cross-validation and by the scikit-learn estimator). Scaling is fitted on ``idx_train``.

    >>> x = np.linspace(0, 1, 10).reshape(-1, 1)
    >>> d = data_from_indices(x, x**2, np.arange(8), np.arange(8, 10), np.arange(0),
    ...                       features=["x"], targets=["y"])
    >>> d.x_train.shape, d.x_val.shape, d.x_test.shape
    (torch.Size([8, 1]), torch.Size([2, 1]), torch.Size([0, 1]))
    """
    tdtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=tdtype).to(device)

    data = Data(
        t(x[idx_train]), t(y[idx_train]), t(x[idx_val]), t(y[idx_val]),
        t(x[idx_test]), t(y[idx_test]), list(features), list(targets), None, digest_arrays(x, y),
    )
    if scale:
        data.scaler = Standardizer.fit(
            torch.as_tensor(x[idx_train]), torch.as_tensor(y[idx_train])
        )
    for name in ("train", "val", "test"):
        xs, ys = data.split(name, scaled=False)
        if data.scaler is not None:
            xs, ys = data.scaler.transform_x(xs), data.scaler.transform_y(ys)
        data.scaled[f"x_{name}"], data.scaled[f"y_{name}"] = xs, ys
    if dydx is not None:
        if y.shape[1] != 1:
            raise DataError(f"[data] derivatives need one target; got {len(targets)}: {targets!r}")
        data.dydx_index = list(dydx_index or [])
        factor = np.ones(len(data.dydx_index))
        if data.scaler is not None:  # d(y_s)/d(x_s) = dy/dx * x_std / y_std
            factor = (data.scaler.x_std.numpy()[data.dydx_index] / data.scaler.y_std.numpy()[0])
        for name, idx in (("train", idx_train), ("val", idx_val), ("test", idx_test)):
            data.dydx[name] = t(dydx[idx] * factor)
    return data
