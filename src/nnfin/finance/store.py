"""Write and read generated datasets; Parquet keeps the generator's metadata.

The metadata dict is stored as JSON under the key ``nnfin`` of the Parquet schema
metadata (next to pandas' own key). CSV files hold the columns only: no metadata.

>>> import tempfile, pathlib
>>> from nnfin.finance.datasets import generate
>>> df, meta = generate("black-scholes", n=5, seed=0)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "bs.parquet"
>>> _ = write_dataset(df, meta, path)
>>> df2, meta2 = read_dataset(path)
>>> meta2 == meta, df2.equals(df)
(True, True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nnfin import files
from nnfin.errors import DataError

META_KEY = b"nnfin"
SUFFIXES: tuple[str, ...] = (".parquet", ".pq", ".csv")


def _suffix(path: Path, field: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{field} = {str(path)!r}: unsupported file type {suffix or '(none)'!r}; "
            "use .parquet (keeps metadata) or .csv"
        )
    return suffix


def check_out_path(path: str | Path, *, force: bool = False, field: str = "out") -> Path:
    """Check that ``path`` can be written (suffix, folder, no file there unless ``force``)."""
    return files.check_target(path, force=force, field=field, suffixes=SUFFIXES, folder_exists=True)


def write_dataset(
    frame: pd.DataFrame,
    meta: Mapping[str, Any],
    path: str | Path,
    *,
    force: bool = False,
    field: str = "out",
) -> Path:
    """Write ``frame`` to ``.parquet`` (with ``meta``) or ``.csv`` (without); returns the path.

    Refuses to replace an existing file unless ``force=True``; the file appears whole or not
    at all (written beside it, then renamed into place), so a killed write never leaves half a
    dataset where the old file was.
    """
    p = check_out_path(path, force=force, field=field)
    if p.suffix.lower() == ".csv":
        return files.write_frame(p, frame, float_format="%.17g", force=force, field=field, parents=False)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(dict(meta), sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_meta)
    return files.write_with(p, lambda tmp: pq.write_table(table, tmp), force=force, field=field,
                            parents=False)


def read_dataset(path: str | Path, *, field: str = "path") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a dataset written by :func:`write_dataset`: ``(frame, meta)``.

    ``meta`` is ``{}`` for CSV files and for Parquet files written by other tools.
    """
    p = Path(path)
    suffix = _suffix(p, field)
    if not p.is_file():
        raise DataError(f"{field} = {str(p)!r}: file does not exist")
    try:
        if suffix == ".csv":
            return pd.read_csv(p), {}
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{field} = {str(p)!r} cannot be read: {reason}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        raise DataError(f"{field} = {str(p)!r}: its nnfin metadata is not valid JSON") from None
    return table.to_pandas(), meta
