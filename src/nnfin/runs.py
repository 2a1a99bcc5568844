"""The run folder - the contract users and tools rely on - and the :class:`Run` object.

```
runs/<name>/
  config.toml        the fully resolved config (rerunnable as is)
  metrics.json       status, device, time, train/val/test metrics in the data's units
  history.csv        one row per epoch
  model.safetensors  weights (+ data scaling); model.json: how to rebuild without pickle
  gradients.safetensors  gradients of the training loss at the final weights
  checkpoints/       last.ckpt, best.ckpt
  plots/             fit.png, loss.png
```

>>> run = load_run("runs/my-run")  # doctest: +SKIP
>>> run.predict([[0.5]])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from nnfin import files
from nnfin.config import Config, RunConfig, load_config
from nnfin.data.scaling import Standardizer
from nnfin.errors import ConfigError, DataError, FileFormatError, NNFinError
from nnfin.io import USER_KIND, load_model


@dataclass
class Run:
    """A trained model with its config, scaling, history and metrics.

    Units: ``run.model(x)`` works in the standardized units the network was trained in (inputs
    and outputs scaled by ``run.scaler``); :meth:`predict` (NumPy out) and
    :meth:`predict_tensor` (torch in and out, differentiable) take and give the data's units.

    >>> run = load_run("runs/my-run")  # doctest: +SKIP
    >>> run.predict([[0.5]])  # data units, NumPy  # doctest: +SKIP
    >>> x = torch.tensor([[0.5]], requires_grad=True)  # doctest: +SKIP
    >>> run.predict_tensor(x).sum().backward(); x.grad  # dy/dx in data units  # doctest: +SKIP
    """

    config: Config
    model: nn.Module
    scaler: Standardizer | None
    features: list[str]
    targets: list[str]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, Any] = field(default_factory=dict)
    dir: Path | None = None

    @property
    def status(self) -> str:
        return self.metrics.get("status", "unknown")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The network in the data's units, differentiable: ``x`` (n, n_features) in the data's
        units -> (n, n_targets) in the data's units, scaling applied and undone with autograd
        (so ``torch.autograd.grad`` gives dy/dx in the data's units). The result keeps ``x``'s
        dtype and device is the model's.

        >>> y = run.predict_tensor(torch.linspace(0, 1, 5).reshape(-1, 1))  # doctest: +SKIP
        """
        if not torch.is_tensor(x):
            raise DataError(f"predict_tensor takes a torch.Tensor, got {type(x).__name__}; "
                            "use predict for arrays and tables")
        if x.dim() != 2 or x.shape[1] != len(self.features):
            raise DataError(f"input has shape {tuple(x.shape)}; expected (n, {len(self.features)}) "
                            f"for features {self.features!r}")
        if not x.is_floating_point():  # integer inputs: compute in floats, never round the output
            x = x.to(torch.float64)
        param = next(self.model.parameters())
        t = x.to(param.device)
        if self.scaler is not None:
            t = (t - self.scaler.x_mean.to(t)) / self.scaler.x_std.to(t)
        out = self.model(t.to(param.dtype)).to(x.dtype)
        if self.scaler is not None:
            out = out * self.scaler.y_std.to(out) + self.scaler.y_mean.to(out)
        return out

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        """Predict in the data's units for inputs shaped (n, n_features) (or (n,) for one).

        Accepts NumPy arrays, lists, tensors and DataFrames (columns picked by name).
        """
        if isinstance(x, pd.DataFrame):
            missing = [f for f in self.features if f not in x.columns]
            if missing:
                raise DataError(f"input lacks the training feature column(s) {missing!r} "
                                f"(has: {', '.join(map(str, x.columns))})")
            x = x[self.features]
        try:
            t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64) if not torch.is_tensor(x)
                                else x).to(torch.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"input is not numeric ({str(exc).splitlines()[0][:120]}); give numbers "
                            f"for features {self.features!r}") from None
        if t.dim() == 1 and len(self.features) == 1:
            t = t.reshape(-1, 1)
        if t.dim() != 2 or t.shape[1] != len(self.features):
            raise DataError(f"input has shape {tuple(t.shape)}; expected (n, {len(self.features)}) "
                            f"for features {self.features!r}")
        bad = (~torch.isfinite(t)).nonzero()
        if len(bad):
            row, col = (int(v) for v in bad[0])
            raise DataError(f"input has a missing or non-finite value at row {row}, feature "
                            f"{self.features[col]!r} ({float(t[row, col])}); predictions need numbers")
        param = next(self.model.parameters())
        t = t.to(param.device, torch.float64)
        if self.scaler is not None:
            t = self.scaler.transform_x(t)
        was_training = self.model.training
        self.model.eval()
        out = self.model(t.to(param.dtype)).to(torch.float64)
        self.model.train(was_training)
        if self.scaler is not None:
            out = self.scaler.inverse_y(out)
        return out.cpu().numpy()


# ------------------------------------------------------------------------ folders


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def new_run_dir(cfg: Config) -> Path:
    """Create the run folder; refuse one that already holds files (nothing is overwritten).

    ``[run] dir`` may name a missing or an empty folder; without it the folder is
    ``[run] root/<time>-<model>-<data>``, with ``-2``, ``-3``... when that name is taken.
    """
    return create_run_dir(cfg)[0]


# what marks a previous run of each kind (``force`` replaces only such a folder's own files)
RUN_MARKERS = {"fit": ("config.toml", "metrics.json"), "cv": ("config.toml", "cv.json")}
# the files nnfin writes into a run folder (``plots/loss.png``...); :func:`clear_run` removes them
RUN_FILES = ("config.toml", "metrics.json", "history.csv", "model.safetensors", "model.json",
             "gradients.safetensors", "cv.csv", "cv.json", "plots/loss.png", "plots/fit.png",
             "checkpoints/last.ckpt", "checkpoints/prev.ckpt", "checkpoints/best.ckpt",
             "report/metrics.csv", "report/iv_solvers.csv", "report/report.json",
             "report/error_surface.png", "report/greeks.png")


def create_run_dir(cfg: Config, *, force: bool = False, kind: str = "fit") -> tuple[Path, bool]:
    """Like :func:`new_run_dir`; also says whether the folder was made (``False``: it existed).

    With ``force``, ``[run] dir`` may also hold a previous run of the same ``kind`` (``fit``:
    its ``config.toml`` and ``metrics.json``; ``cv``: ``config.toml`` and ``cv.json``), whose
    files the caller then replaces (:func:`clear_run`); any other non-empty folder is refused.
    """
    rc: RunConfig = cfg.run
    if rc.dir:
        path = Path(rc.dir)
        if path.is_symlink() and not path.exists():
            raise ConfigError(f"[run] dir = {rc.dir!r} is a symbolic link to a missing folder; "
                              "remove the link or choose another folder")
        if path.exists() and (not path.is_dir() or any(p.name != files.LOCK_NAME for p in path.iterdir())):
            markers = RUN_MARKERS.get(kind, ())
            if not force:
                raise ConfigError(f"[run] dir = {rc.dir!r} already exists and is not empty; "
                                  "choose another folder (nothing was overwritten), or pass --force "
                                  f"(force=True) to replace a previous nnfin {kind} run there")
            if not path.is_dir() or not markers or not _is_previous_run(path, kind):
                raise ConfigError(f"[run] dir = {rc.dir!r} is not empty and is not a previous nnfin "
                                  f"{kind} run (no {' and '.join(markers)} written by nnfin); force "
                                  "replaces only such a run: choose another folder (nothing was "
                                  "overwritten)")
        existed = path.is_dir()
        _mkdir(path, exist_ok=True)
        return path, not existed
    data = Path(cfg.data.path).stem if cfg.data.kind == "file" and cfg.data.path else cfg.data.kind
    base = Path(rc.root) / _slug(f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.kind}-{data}")
    path, k = base, 1
    while True:
        if not path.exists() and not path.is_symlink() and _mkdir(path, exist_ok=False):
            return path, True
        k += 1
        path = base.with_name(f"{base.name}-{k}")


def _is_previous_run(path: Path, kind: str) -> bool:
    """Whether ``path`` holds a run of ``kind`` that nnfin wrote: its marker files exist *and*
    read as nnfin's (a config with nnfin's sections, the JSON summary with nnfin's keys), so a
    user's own ``config.toml`` or ``metrics.json`` is never taken for one."""
    try:
        cfg = parse_config(path / "config.toml")
        summary = parse_metrics(path / ("cv.json" if kind == "cv" else "metrics.json"))
    except READ_ERRORS:
        return False
    keys = {"status", "versions", "epochs"} if kind == "fit" else {"metric", "folds", "engine"}
    return bool(set(cfg) & {"data", "model", "train"}) and keys <= set(summary)


def _mkdir(path: Path, *, exist_ok: bool) -> bool:
    """Make the folder; ``False`` when ``exist_ok`` is off and the folder appeared meanwhile."""
    try:
        made = files.make_dir(path, field="[run] dir")
    except NNFinError as exc:
        raise ConfigError(str(exc)) from None
    return made or exist_ok


def clear_run(path: Path) -> None:
    """Remove nnfin's own files of a previous run in ``path`` (:data:`RUN_FILES`, TensorBoard
    event files, and the subfolders nnfin made once they are empty); nothing else is touched."""
    for name in RUN_FILES:
        files.remove(path / name)
    board = path / "tensorboard"
    if board.is_dir() and not board.is_symlink():
        for event in board.glob("events.out.tfevents.*"):
            files.remove(event)
    for sub in ("plots", "checkpoints", "report", "tensorboard"):
        files.remove(path / sub)  # only if empty


def abandon_run_dir(path: Path, created: bool, *, keep: bool = False) -> None:
    """Undo :func:`create_run_dir` after a refusal: remove nnfin's own files, and the folder
    only if nnfin made it (a folder the user made stays, empty as it was). ``keep``: the folder
    holds a previous run that ``force`` was to replace; only the lock file goes."""
    for name in (files.LOCK_NAME,) if keep else ("config.toml", files.LOCK_NAME):
        files.remove(path / name)
    if created:
        files.remove(path)  # only if empty: nothing of the user's can go


def write_config(run_dir: Path, cfg: Config, *, force: bool = False) -> Path:
    """``config.toml`` of a run folder: the resolved config without ``[run] dir``, so that
    ``nnfin fit runs/NAME/config.toml`` (or ``nnfin cv``) reruns it into a new folder."""
    import tomli_w

    raw = cfg.to_dict()
    raw.get("run", {}).pop("dir", None)
    return files.write_text(run_dir / "config.toml", tomli_w.dumps(raw), force=force)


# ----------------------------------------------------------------- reading a run folder

# what reading a broken file raises: UnicodeDecodeError, TOMLDecodeError, JSONDecodeError and
# pandas' ParserError are ValueErrors; permissions and I/O failures are OSErrors
READ_ERRORS = (OSError, ValueError)


def read_problem(exc: BaseException) -> str:
    """Why a file could not be read, in one short line (``not UTF-8 text (byte b'\\xff' at
    position 1)``, ``Invalid value (at line 3, column 5)``, ``Permission denied``)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at position {exc.start})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text[:160] or type(exc).__name__


def parse_config(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def parse_metrics(path: Path) -> dict[str, Any]:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError(f"holds a JSON {type(metrics).__name__}, not an object")
    return metrics


def parse_history(path: Path) -> pd.DataFrame:
    try:
        history = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError:  # a run that diverged in its first epoch
        return pd.DataFrame()
    if len(history) and "epoch" not in history:
        raise ValueError(f"no 'epoch' column (columns: {', '.join(map(str, history.columns))})")
    return history


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The raw ``config.toml`` of a run (not validated, so older runs still open)."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise FileFormatError(f"{str(run_dir)!r} is not a run folder (no config.toml)")
    try:
        return parse_config(path)
    except READ_ERRORS as exc:
        raise FileFormatError(f"{str(path)!r} cannot be read: {read_problem(exc)}") from None


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """``metrics.json``, or ``None`` while the run is going (or was killed before the end)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        return parse_metrics(path)
    except READ_ERRORS as exc:
        raise FileFormatError(f"{str(path)!r} cannot be read: {read_problem(exc)}") from None


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """``history.csv`` (empty when missing or empty)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return pd.DataFrame()
    try:
        return parse_history(path)
    except READ_ERRORS as exc:
        raise FileFormatError(f"{str(path)!r} cannot be read: {read_problem(exc)}") from None



def load_run(path: str | Path, *, device: str | torch.device = "cpu",
             model: nn.Module | None = None) -> Run:
    """Open a run folder written by ``nnfin fit``, or a model folder written by
    :func:`nnfin.save` (weights via safetensors, never pickle).

    A run of your own network (``nnfin.fit(..., model=MyNet())``) loads its weights into
    ``model``, which must be built as the trained one was; without it the run is refused.
    A model folder has no config, history or metrics: its :class:`Run` predicts with the
    stored scaling.

    >>> run = load_run("runs/my-net", model=MyNet())  # doctest: +SKIP
    >>> run.predict([[0.5]])  # doctest: +SKIP
    """
    run_dir = Path(path)
    if run_dir.is_file():
        raise FileFormatError(f"{str(run_dir)!r} is a file, not a run folder; load_run opens a run "
                              "folder written by nnfin fit; read a model file with "
                              "nnfin.load(path) (nnfin predict FILE on the command line)")
    if not run_dir.is_dir():
        raise FileFormatError(f"run folder {str(run_dir)!r} does not exist")
    if not (run_dir / "config.toml").exists() and (run_dir / "model.json").is_file():
        net, spec, scaler = load_model(run_dir, device=device, model=model)
        raw = {} if spec["model"].get("kind") == USER_KIND else {"model": spec["model"]}
        return Run(load_config(raw), net, scaler, spec["features"], spec["targets"], dir=run_dir)
    if not (run_dir / "config.toml").exists():
        raise FileFormatError(f"{str(run_dir)!r} is not a run folder (no config.toml)")
    cfg = load_config(run_dir / "config.toml")
    metrics: dict[str, Any] = {}
    if (run_dir / "metrics.json").exists():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{str(run_dir / 'metrics.json')!r} is not valid JSON: {exc}") \
                from None
    if not (run_dir / "model.json").exists():
        status = metrics.get("status", "unknown")
        raise FileFormatError(f"run {str(run_dir)!r} has no saved model (status: {status})")
    net, spec, scaler = load_model(run_dir, device=device, model=model)
    return Run(cfg, net, scaler, spec["features"], spec["targets"], read_history(run_dir),
               metrics, run_dir)
