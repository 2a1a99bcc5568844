"""Predict with a trained model: ``nnfin.predict(model, data)`` (``nnfin predict`` on the command line).

``model`` is a run folder, a model folder written by :func:`nnfin.save`, a :class:`~nnfin.runs.Run`,
or (with ``trust=True``) a whole pickled model file. ``data`` is a CSV or Parquet file, a
DataFrame, or an array of shape (n, n_features). The data must hold the columns the model was
trained on (``features`` in ``model.json``); other columns are kept as they are. The saved data
scaling is applied to the inputs and undone on the outputs, so predictions are in the data's
units: one ``<target>_pred`` column per target is appended.

A whole pickled model (``torch.save(model, path)``) holds no feature names and no data scaling,
so its inputs are the columns named by ``features`` (or every numeric column, in order, when
their number matches the model's input width), fed as they are, and its outputs are named
``y_pred`` (``y1_pred``, ``y2_pred``, ... for several).

>>> import nnfin
>>> table = nnfin.predict("runs/my-run", "grid.csv")  # doctest: +SKIP
>>> nnfin.predict("runs/my-run", "grid.csv", out="pred.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from nnfin import files
from nnfin.config import load_config
from nnfin.data.files import columns_as_array, read_frame
from nnfin.errors import DataError, FileFormatError, did_you_mean
from nnfin.io import SPEC, load_model
from nnfin.runs import Run, load_run
from nnfin.saving import load

CHUNK_ROWS = 65536  # rows per forward pass: bounded memory for large inputs


def predict(model: str | Path | Run, data: str | Path | pd.DataFrame | np.ndarray, *,
            out: str | Path | None = None, force: bool = False, trust: bool = False,
            features: str | Sequence[str] | None = None) -> pd.DataFrame:
    """``data`` with one ``<target>_pred`` column per target appended, in the data's units;
    written to ``out`` (.csv or .parquet) too when given (an existing file needs ``force``).

    ``features`` names the input columns of a whole pickled model (``trust=True``), as a list
    or ``"a,b,c"``.
    """
    return predict_table(model, data, out=out, force=force, trust=trust, features=features)[0]


def predict_table(model: str | Path | Run, data: str | Path | pd.DataFrame | np.ndarray, *,
                  out: str | Path | None = None, force: bool = False, trust: bool = False,
                  features: str | Sequence[str] | None = None) -> tuple[pd.DataFrame, Run]:
    """:func:`predict`, also returning the :class:`~nnfin.runs.Run` it used."""
    if out is not None:  # refused before the model and the data are read
        files.check_target(out, force=force, field="--out", suffixes=files.FRAME_SUFFIXES)
    run = model if isinstance(model, Run) else open_model(model, trust=trust)
    source = str(data) if isinstance(data, (str, Path)) else type(data).__name__
    frame = _frame(data, run)
    names = ",".join(features) if features is not None and not isinstance(features, str) else features
    where = Path(str(model)) if not isinstance(model, Run) else Path(str(run.dir))
    if is_whole_model(run):
        run.features = whole_model_features(run, frame, names, source, where)
    elif names is not None and [f.strip() for f in names.split(",")] != run.features:
        raise DataError(f"--features {names!r} is for whole model files; {str(where)!r} "
                        f"stores its feature names: {', '.join(run.features)}")
    result = predict_frame(run, frame, source)
    if out is not None:
        files.write_frame(out, result, force=force, field="--out")
    return result, run


def _frame(data: Any, run: Run) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, Path)):
        return read_frame(data, field="INPUT")
    x = np.asarray(data, dtype=np.float64)
    if x.ndim == 1 and len(run.features) <= 1:
        x = x.reshape(-1, 1)
    names = run.features or [f"x{i + 1}" for i in range(x.shape[1] if x.ndim == 2 else 0)]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise DataError(f"data has shape {x.shape}; expected (n, {len(names)}) for features "
                        f"{', '.join(names)}")
    return pd.DataFrame(x, columns=names)


def open_model(path: str | Path, *, trust: bool = False) -> Run:
    """A :class:`nnfin.runs.Run` for a run folder, a model folder written by nnfin.save, or
    (with ``trust``) a whole pickled model; the latter has no feature or target names yet
    (see :func:`whole_model_features`) and no scaling.

    >>> open_model(Path("runs/my-run")).features  # doctest: +SKIP
    ['x']
    """
    path = Path(path)
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


def is_whole_model(run: Run) -> bool:
    """Whether ``run`` came from a whole pickled model (no folder, no stored names, no scaling)."""
    return run.dir is None and run.scaler is None


def model_width(model: nn.Module, attr: str) -> int | None:
    """The input (``attr="in"``) or output width of ``model``, when it tells: its
    ``in_dim``/``out_dim`` attribute, else its first/last ``nn.Linear`` layer."""
    width = getattr(model, f"{attr}_dim", None)
    if isinstance(width, int):
        return width
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        return None
    return linear[0].in_features if attr == "in" else linear[-1].out_features


def whole_model_features(run: Run, frame: pd.DataFrame, features: str | None, source: str,
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


def predict_frame(run: Run, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` with one ``<target>_pred`` column per target appended (data units)."""
    if len(frame) == 0:
        raise DataError(f"input {source!r} holds no rows")
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
