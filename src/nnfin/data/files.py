"""User data from CSV or Parquet files, read with pandas.

>>> x, y = read_table("prices.csv", features=["S", "K"], target="V")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nnfin.errors import DataError, did_you_mean

SUFFIXES = (".csv", ".parquet", ".pq")


def read_frame(path: str | Path, *, field: str = "[data] path") -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame, with one-line errors for bad files."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{field} = {str(p)!r}: file does not exist")
    if not p.is_file():
        raise DataError(f"{field} = {str(p)!r} is not a file")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{field} = {str(p)!r}: unsupported file type {suffix!r}; use .csv or .parquet")
    try:
        frame = pd.read_csv(p) if suffix == ".csv" else pd.read_parquet(p)
        # pandas renames a repeated CSV header ("x", "x" -> "x", "x.1"): read the names as written
        header = pd.read_csv(p, nrows=1, header=None, dtype=str).iloc[0] if suffix == ".csv" \
            else frame.columns
        names = [str(c) for c in header]
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{field} = {str(p)!r} cannot be read: {reason}") from None
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise DataError(f"{field} = {str(p)!r} has two columns named {twice!r}; give every column "
                        "its own name")
    if frame.empty:
        raise DataError(f"{field} = {str(p)!r} holds no rows")
    return frame


def columns_as_array(
    frame: pd.DataFrame, columns: Sequence[str], *, field: str, source: str
) -> np.ndarray:
    """Select numeric, finite columns as a float64 array of shape (rows, len(columns))."""
    available = [str(c) for c in frame.columns]
    for col in columns:
        if col not in frame.columns:
            raise DataError(
                f"{field}: column {col!r} not found in {source!r}{did_you_mean(col, available)}"
                f" (columns: {', '.join(c if c.isprintable() else repr(c) for c in available)})"
            )
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{field}: column {col!r} in {source!r} is not numeric"
                f" (row {row}: {frame[col].iloc[row]!r})"
            )
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(arr)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"{field}: column {col!r} in {source!r} has a missing or non-finite value"
                f" at row {row} ({float(arr[row])!r})"
            )
        out[:, j] = arr
    return out


def read_table(
    path: str | Path, *, features: Sequence[str] | None, target: str | Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read ``features`` and ``target`` columns: returns ``x, y, feature_names, target_names``.

    Without ``target`` the last column is the target; without ``features`` every other column
    is a feature.
    """
    return table_arrays(read_frame(path), features=features, target=target, source=str(path))


def table_arrays(
    frame: pd.DataFrame, *, features: Sequence[str] | None, target: str | Sequence[str] | None,
    source: str, exclude: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``x, y, feature_names, target_names`` from a DataFrame (see :func:`read_table`)."""
    columns = [str(c) for c in frame.columns]
    targets = [target] if isinstance(target, str) else list(target or [columns[-1]])
    feats = list(features) if features else [
        c for c in columns if c not in targets and c not in exclude]
    if not feats:
        raise DataError(f"[data] features: no input columns left in {source!r} besides {targets!r}")
    if not targets:
        raise DataError("[data] target = [] must name at least one column")
    overlap = set(feats) & set(targets)
    if overlap:
        raise DataError(f"[data] column {sorted(overlap)[0]!r} is both a feature and a target")
    x = columns_as_array(frame, feats, field="[data] features", source=source)
    y = columns_as_array(frame, targets, field="[data] target", source=source)
    return x, y, feats, targets
