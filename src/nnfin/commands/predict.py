"""``nnfin predict RUN INPUT -o OUT``: apply a trained model to a CSV or Parquet file.

The input must hold the columns the model was trained on (``features`` in ``model.json``);
other columns are kept as they are. The saved data scaling is applied to the inputs and undone
on the outputs, so predictions are in the data's units. OUT holds every input column followed
by one prediction column per target, named ``<target>_pred`` (e.g. ``y_pred``, ``V_pred``).
OUT's suffix picks the format (.csv, or .parquet / .pq); an existing OUT is kept unless
``--force`` is given.

    nnfin predict runs/my-run grid.csv -o grid_pred.parquet
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console

from nnfin.errors import DataError, FileFormatError, did_you_mean

console = Console(highlight=False, soft_wrap=True)  # paths stay on one line

OUT_SUFFIXES = (".csv", ".parquet", ".pq")
CHUNK_ROWS = 65536  # rows per forward pass: bounded memory for large inputs


def open_model(path: Path, *, trust: bool = False):
    """A :class:`nnfin.runs.Run` for a run folder, or for a model folder written by nnfin.save.

    >>> open_model(Path("runs/my-run")).features  # doctest: +SKIP
    ['x']
    """
    from nnfin.config import load_config
    from nnfin.io import SPEC, load_model
    from nnfin.runs import Run, load_run
    from nnfin.saving import load

    if path.is_dir() and (path / "config.toml").exists():
        return load_run(path)
    if path.is_dir() or path.suffix.lower() in (".json", ".safetensors"):
        if path.is_dir() and not (path / SPEC).exists():
            raise FileFormatError(f"{str(path)!r} is neither a run folder nor a model folder "
                                  f"(no config.toml, no {SPEC})")
        model, spec, scaler = load_model(path)
        return Run(load_config({"model": spec["model"]}), model, scaler, spec["features"],
                   spec["targets"], dir=path if path.is_dir() else path.parent)
    load(path, trust=trust)  # refuses pickles without --trust, reports bad files
    raise FileFormatError(f"model file {str(path)!r} holds no feature names or data scaling; "
                          "predict needs a run folder or a folder written by nnfin.save(model, "
                          "folder)")


def check_columns(frame: pd.DataFrame, features: list[str], source: str) -> None:
    """Name every missing feature column, each with its closest match in the input."""
    available = [str(c) for c in frame.columns]
    missing = [f for f in features if f not in frame.columns]
    if missing:
        lower = {c.lower(): c for c in available}
        hints = {m: f"did you mean {lower[m.lower()]!r}?" if m.lower() in lower
                 else did_you_mean(m, available)[2:] for m in missing}
        named = ", ".join(f"{m!r} ({hints[m]})" if hints[m] else repr(m) for m in missing)
        raise DataError(f"input {source!r} lacks the model's feature column(s) {named}; the model "
                        f"was trained on {', '.join(features)}; the input has "
                        f"{', '.join(available)}")


def write_frame(frame: pd.DataFrame, out: Path) -> None:
    """Write CSV or Parquet by suffix through a temporary file, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def predict_frame(run, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` with one ``<target>_pred`` column per target appended (data units)."""
    from nnfin.data.files import columns_as_array

    check_columns(frame, run.features, source)
    names = [f"{t}_pred" for t in run.targets]
    clash = [n for n in names if n in frame.columns]
    if clash:
        raise DataError(f"input {source!r} already has a column {clash[0]!r}; rename or drop it "
                        "(predictions are written as <target>_pred)")
    x = columns_as_array(frame, run.features, field="input", source=source)
    y = np.concatenate([run.predict(x[i:i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])
    out = frame.copy()
    for j, name in enumerate(names):
        out[name] = y[:, j]
    return out


def predict(
    run_dir: Path = typer.Argument(..., help="Run folder (or model folder) to predict with."),
    input_: Path = typer.Argument(..., metavar="INPUT", help="CSV or Parquet file of inputs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .csv or .parquet."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling a torch file (runs its "
                               "code); run and model folders never need it."),
) -> None:
    """Predict with a trained model: writes the inputs plus <target>_pred columns to OUT."""
    from nnfin.data.files import read_frame

    if out.suffix.lower() not in OUT_SUFFIXES:
        raise DataError(f"--out {str(out)!r}: unsupported file type {out.suffix!r}; use .csv or "
                        ".parquet")
    if out.exists() and not force:
        raise DataError(f"--out {str(out)!r} already exists; pass --force to overwrite it "
                        "(nothing was written)")
    if out.exists() and out.is_dir():
        raise DataError(f"--out {str(out)!r} is a folder; give a file name")
    run = open_model(run_dir, trust=trust)
    frame = read_frame(input_, field="INPUT")
    result = predict_frame(run, frame, str(input_))
    write_frame(result, out)
    new = [c for c in result.columns if c not in frame.columns]
    console.print(f"predicted {len(result)} rows: {', '.join(new)} from {', '.join(run.features)} "
                  f"(model: {run_dir})")
    console.print(f"wrote {len(result)} rows x {len(result.columns)} columns to {out}")
