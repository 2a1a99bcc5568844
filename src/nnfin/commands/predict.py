"""``nnfin predict RUN INPUT -o OUT``: apply a trained model to a CSV or Parquet file.

The input must hold the columns the model was trained on (``features`` in ``model.json``);
other columns are kept as they are. The saved data scaling is applied to the inputs and undone
on the outputs, so predictions are in the data's units. OUT holds every input column followed
by one prediction column per target, named ``<target>_pred`` (e.g. ``y_pred``, ``V_pred``).
OUT's suffix picks the format (.csv, or .parquet / .pq); an existing OUT is kept unless
``--force`` is given.

A whole pickled model (``torch.save(model, path)``) is read only with ``--trust``; it holds no
feature names and no data scaling, so its inputs are the columns named by ``--features`` (or
every numeric column, in order, when their number matches the model's input width), fed as they
are, and its outputs are named ``y_pred`` (``y1_pred``, ``y2_pred``, ... for several).

    nnfin predict runs/my-run grid.csv -o grid_pred.parquet
    nnfin predict model.pth grid.csv -o pred.csv --trust --features S,K
"""

from __future__ import annotations

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
    """A :class:`nnfin.runs.Run` for a run folder, a model folder written by nnfin.save, or
    (with ``trust``) a whole pickled model; the latter has no feature or target names yet
    (see :func:`whole_model_features`) and no scaling.

    >>> open_model(Path("runs/my-run")).features  # doctest: +SKIP
    ['x']
    """
    from torch import nn

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
    obj = load(path, trust=trust)  # refuses pickles without --trust, reports bad files
    if isinstance(obj, nn.Module):
        if next(obj.parameters(), None) is None:
            raise FileFormatError(f"model file {str(path)!r} holds a {type(obj).__name__} without "
                                  "parameters; predict needs a trained model")
        return Run(load_config({}), obj, None, [], [], dir=None)
    what = "a state dict or checkpoint (tensors only)" if isinstance(obj, dict) \
        else f"a {type(obj).__name__}"
    raise FileFormatError(f"model file {str(path)!r} holds {what}: no model and no feature names; "
                          "predict needs a run folder, a "
                          "folder written by nnfin.save(model, folder), or a whole model file "
                          "(torch.save(model, path)) with --trust")


def is_whole_model(run) -> bool:
    """Whether ``run`` came from a whole pickled model (no stored names, no scaling)."""
    return not run.features and run.scaler is None


def model_width(model, attr: str) -> int | None:
    """The input (``attr="in"``) or output width of ``model``, when it tells: its
    ``in_dim``/``out_dim`` attribute, else its first/last ``nn.Linear`` layer."""
    from torch import nn

    width = getattr(model, f"{attr}_dim", None)
    if isinstance(width, int):
        return width
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        return None
    return linear[0].in_features if attr == "in" else linear[-1].out_features


def whole_model_features(run, frame: pd.DataFrame, features: str | None, source: str,
                         model_path: Path) -> list[str]:
    """The input columns for a whole pickled model: ``--features`` or every numeric column."""
    width = model_width(run.model, "in")
    wants = f"the model takes {width} input(s)" if width is not None else "the model's input width"
    if features is not None:
        names = [f.strip() for f in features.split(",") if f.strip()]
        if not names:
            raise DataError(f"--features {features!r} names no column; give them as a,b,c")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise DataError(f"--features {features!r} names column {twice!r} twice")
        if width is not None and len(names) != width:
            raise DataError(f"--features {features!r} names {len(names)} column(s); {wants} "
                            f"(model file {str(model_path)!r})")
        available = [str(c) for c in frame.columns]
        missing = [n for n in names if n not in available]
        if missing:
            raise DataError(f"--features {features!r}: input {source!r} has no column "
                            f"{missing[0]!r}{did_you_mean(missing[0], available)} (columns: "
                            f"{', '.join(available)})")
        return names
    numeric = [str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    if not numeric or (width is not None and len(numeric) != width):
        raise DataError(f"model file {str(model_path)!r} holds no feature names and {wants}; "
                        f"input {source!r} has {len(numeric)} numeric column(s) "
                        f"({', '.join(numeric) or 'none'}); name the inputs with --features a,b,c")
    return numeric


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


def write_frame(frame: pd.DataFrame, out: Path, *, force: bool = False) -> None:
    """Write CSV or Parquet by suffix through nnfin's writer (atomic; ``force`` replaces)."""
    from nnfin import files

    files.write_frame(out, frame, force=force, field="--out")


def predict_frame(run, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` with one ``<target>_pred`` column per target appended (data units)."""
    from nnfin.data.files import columns_as_array

    check_columns(frame, run.features, source)
    if not run.targets:  # a whole pickled model: name its outputs y or y1, y2, ...
        width = model_width(run.model, "out") or 1
        run.targets = ["y"] if width == 1 else [f"y{j + 1}" for j in range(width)]
    names = [f"{t}_pred" for t in run.targets]
    clash = [n for n in names if n in frame.columns]
    if clash:
        raise DataError(f"input {source!r} already has a column {clash[0]!r}; rename or drop it "
                        "(predictions are written as <target>_pred)")
    x = columns_as_array(frame, run.features, field="input", source=source)
    try:
        y = np.concatenate([run.predict(x[i:i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])
    except RuntimeError as exc:  # a whole pickled model (no folder) whose shapes do not fit
        if run.dir is not None:
            raise
        raise DataError(f"the model cannot take the {len(run.features)} input column(s) "
                        f"{', '.join(run.features)} from {source!r}: "
                        f"{str(exc).strip().splitlines()[0][:200]}; choose them with --features") from None
    if y.ndim != 2 or y.shape[1] != len(names):
        raise DataError(f"the model returned shape {tuple(y.shape)}; expected (n, {len(names)})")
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
    features: str | None = typer.Option(None, "--features", help="Input columns of a whole "
                                        "model file (--trust), in order: a,b,c (default: every "
                                        "numeric column)."),
) -> None:
    """Predict with a trained model: writes the inputs plus <target>_pred columns to OUT."""
    from nnfin.data.files import read_frame

    if out.suffix.lower() not in OUT_SUFFIXES:
        raise DataError(f"--out {str(out)!r}: unsupported file type {out.suffix!r}; use .csv or "
                        ".parquet")
    from nnfin import files

    files.check_target(out, force=force, field="--out")  # before the model and the data are read
    run = open_model(run_dir, trust=trust)
    frame = read_frame(input_, field="INPUT")
    whole = is_whole_model(run)
    if whole:
        run.features = whole_model_features(run, frame, features, str(input_), run_dir)
    elif features is not None and [f.strip() for f in features.split(",")] != run.features:
        raise DataError(f"--features {features!r} is for whole model files; {str(run_dir)!r} "
                        f"stores its feature names: {', '.join(run.features)}")
    result = predict_frame(run, frame, str(input_))
    write_frame(result, out, force=force)
    new = [c for c in result.columns if c not in frame.columns]
    console.print(f"predicted {len(result)} rows: {', '.join(new)} from {', '.join(run.features)} "
                  f"(model: {run_dir})")
    if whole:
        console.print("note: no data scaling applied: a whole model file holds none, so the "
                      "inputs were fed as they are and the outputs are the model's raw outputs")
    console.print(f"wrote {len(result)} rows x {len(result.columns)} columns to {out}")
