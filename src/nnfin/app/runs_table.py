"""Overview and comparison of run folders: what ``nnfin runs`` and ``nnfin runs compare`` show.

A run is any folder holding a ``config.toml``; it is read without rebuilding its model, so
runs still training, killed or written by older versions are listed too. A run whose
``config.toml``, ``metrics.json`` or ``history.csv`` cannot be read is listed with the status
``unreadable: <file>: <reason>``; the other runs are listed as usual.

>>> rows = sort_runs(find_runs("runs"), "val")  # doctest: +SKIP
>>> print(rows[0].name, rows[0].best_val)  # doctest: +SKIP
>>> from nnfin.runs import read_config
>>> diff = config_differences([read_config("runs/a"), read_config("runs/b")])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from rich.markup import escape
from rich.table import Table

from nnfin.config import flatten
from nnfin.errors import ConfigError
from nnfin.runs import READ_ERRORS, parse_config, parse_history, parse_metrics, read_problem

SORT_KEYS = ("time", "duration", "val", "test", "name")
SPLITS = ("train", "val", "test")
METRICS = ("mse", "rmse", "mae", "r2", "max_abs_error")
MISSING = "running-or-killed"  # the status of a run without metrics.json
UNREADABLE = "unreadable"  # the status (prefix) of a run with a file that cannot be read
@dataclass
class RunSummary:
    """One row of ``nnfin runs``: read from config.toml, metrics.json and history.csv."""

    path: Path
    name: str
    started: datetime
    model: str
    data: str
    status: str
    epochs: int | None = None
    best_val: float | None = None  # lowest val_loss in history.csv (the model's units)
    best_epoch: int | None = None
    test_mse: float | None = None  # metrics.json, data units
    test_r2: float | None = None
    seconds: float | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    problems: list[str] = field(default_factory=list)  # "<file>: <reason>" per unreadable file


def describe_model(cfg: dict[str, Any]) -> str:
    """``mlp 6-6 sigmoid``, ``polynomial degree 3``."""
    m = cfg.get("model", {})
    kind = m.get("kind", "mlp")
    if kind == "polynomial":
        return f"polynomial degree {m.get('degree', 3)}"
    widths = "-".join(str(w) for w in m.get("neurons", [6, 6]))
    return f"{kind} {widths} {m.get('activation', 'sigmoid')}"


def describe_data(cfg: dict[str, Any]) -> str:
    """The data kind, or the file name for ``kind = "file"``."""
    d = cfg.get("data", {})
    if d.get("kind") == "file" and d.get("path"):
        return Path(d["path"]).name
    return str(d.get("kind", "cos"))


def summarize(run_dir: Path, root: Path | None = None) -> RunSummary:
    """Read one run folder into a :class:`RunSummary`; a file that cannot be read makes the
    status ``unreadable: <file>: <reason>`` (what could be read is still shown)."""
    name = str(run_dir.relative_to(root)) if root is not None else run_dir.name
    problems: list[str] = []

    def attempt(parse: Any, file: str, empty: Any) -> Any:
        path = run_dir / file
        try:
            return parse(path) if path.is_file() else empty
        except READ_ERRORS as exc:
            problems.append(f"{file}: {read_problem(exc)}")
            return empty

    cfg = attempt(parse_config, "config.toml", {})
    metrics = attempt(parse_metrics, "metrics.json", None)
    if metrics is None and (run_dir / "cv.json").is_file():  # a cross-validation run: its summary
        cv = attempt(parse_metrics, "cv.json", None)
        if cv is not None:
            metrics = {"status": f"cv {cv.get('status', 'unknown')}", "time_s": cv.get("time_s")}
    history = attempt(parse_history, "history.csv", pd.DataFrame())
    try:
        started = datetime.fromtimestamp((run_dir / "config.toml").stat().st_mtime)
    except OSError:
        started = datetime.fromtimestamp(run_dir.stat().st_mtime)
    model = data = "-"
    if cfg:
        try:
            model, data = describe_model(cfg), describe_data(cfg)
        except (AttributeError, TypeError) as exc:  # e.g. model = 3 instead of a table
            problems.append(f"config.toml: {read_problem(exc)}")
    status = MISSING if metrics is None else str(metrics.get("status", "unknown"))
    row = RunSummary(run_dir, name, started, model, data, status, config=cfg)
    try:
        if len(history):
            row.epochs = int(history["epoch"].iloc[-1])
            if "time" in history:
                row.seconds = float(history["time"].iloc[-1])
            if "val_loss" in history and history["val_loss"].notna().any():
                best = history["val_loss"].idxmin()
                row.best_val = float(history["val_loss"][best])
                row.best_epoch = int(history["epoch"][best])
    except (KeyError, ValueError, TypeError) as exc:  # non-numeric values
        problems.append(f"history.csv: {read_problem(exc)}")
    if metrics:
        row.epochs = metrics.get("epochs", row.epochs)
        row.seconds = metrics.get("time_s", row.seconds)
        test = metrics.get("test")
        if isinstance(test, dict):
            row.test_mse, row.test_r2 = test.get("mse"), test.get("r2")
    for attr in ("seconds", "test_mse", "test_r2"):  # numbers only: the table formats them
        if not isinstance(getattr(row, attr), (int, float, type(None))):
            problems.append(f"metrics.json: {attr} is {getattr(row, attr)!r}, not a number")
            setattr(row, attr, None)
    if problems:
        row.problems = problems
        row.status = f"{UNREADABLE}: {'; '.join(problems)}"
    return row


def find_runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run folder (a folder with ``config.toml``) under ``root``, at any depth."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"runs folder {str(root)!r} does not exist")
    folders = sorted({p.parent for p in root.rglob("config.toml")})
    if (root / "config.toml").is_file():
        folders = [root]
    return [summarize(f, root if f != root else root.parent) for f in folders]


def runs(root: str | Path = "runs", *, sort: str = "time") -> pd.DataFrame:
    """``nnfin runs`` as a table: one row per run folder under ``root`` (at any depth).

    ``best_val`` is the lowest validation loss of ``history.csv`` in the model's units
    (standardized when ``[data] scale = true``); ``test_mse`` and ``test_r2`` are in the data's.

    >>> import nnfin
    >>> nnfin.runs("runs", sort="test")[["name", "test_mse", "status"]].head()  # doctest: +SKIP
    """
    rows = sort_runs(find_runs(root), sort)
    columns = ["name", "path", "started", "model", "data", "status", "epochs", "best_val",
               "best_epoch", "test_mse", "test_r2", "seconds"]
    return pd.DataFrame([{c: getattr(r, c) for c in columns} for r in rows], columns=columns)


def sort_runs(rows: list[RunSummary], key: str = "time") -> list[RunSummary]:
    """Sort by ``time`` (start, oldest first), ``duration``, ``val``/``test`` (best first) or
    ``name``; runs without the value go last."""
    if key not in SORT_KEYS:
        raise ConfigError(f"--sort {key!r} is not allowed; choose one of {', '.join(SORT_KEYS)}")
    if key == "name":
        return sorted(rows, key=lambda r: r.name)
    if key == "time":
        return sorted(rows, key=lambda r: r.started)
    attr = {"duration": "seconds", "val": "best_val", "test": "test_mse"}[key]

    def order(r: RunSummary) -> tuple[bool, float]:
        v = getattr(r, attr)
        return (v is None or not math.isfinite(v), v if v is not None else 0.0)

    return sorted(rows, key=order)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


STATUS_STYLE = {"finished": "green", "early-stopped": "cyan", "interrupted": "yellow",
                "diverged": "red", MISSING: "magenta", UNREADABLE: "red"}


def runs_table(rows: list[RunSummary], title: str = "runs", width: int = 80) -> Table:
    """The rich table ``nnfin runs`` prints, fitted to ``width`` columns (see :func:`fitted_table`):
    time, date, epochs, data and test MSE are left out, in that order, where they do not fit."""
    cells: dict[str, list[str]] = {k: [] for k in ("name", "date", "model", "data", "epochs", "best",
                                                   "mse", "r2", "time", "status")}
    for r in rows:
        style = STATUS_STYLE.get(r.status.split(":", 1)[0], "")
        status = escape(r.status)  # a reason may hold [brackets]
        if r.problems:  # the files here, the reasons below the table (unreadable_lines)
            files = dict.fromkeys(p.split(":", 1)[0] for p in r.problems)
            status = f"{UNREADABLE}: {', '.join(files)}"
        for key, value in (("name", escape(r.name)), ("date", r.started.strftime("%Y-%m-%d %H:%M")),
                           ("model", escape(r.model)), ("data", escape(r.data)),
                           ("epochs", fmt(r.epochs)),
                           ("best", "-" if r.best_val is None else f"{r.best_val:.4g} @{r.best_epoch}"),
                           ("mse", fmt(r.test_mse)), ("r2", fmt(r.test_r2)),
                           ("time", _duration(r.seconds)),
                           ("status", f"[{style}]{status}[/{style}]" if style else status)):
            cells[key].append(value)
    columns = [Col("name", cells["name"], justify="left"),  # names and statuses whole, as numbers
               Col("date", cells["date"], numeric=False, drop=4, floor=10),
               Col("model", cells["model"], numeric=False),
               Col("data", cells["data"], numeric=False, drop=2, floor=6),
               Col("epochs", cells["epochs"], drop=3),
               Col("best val loss\n(model units) @ep", cells["best"]),
               Col("test\nMSE", cells["mse"], drop=1),
               Col("test\nR²", cells["r2"]),
               Col("time", cells["time"], drop=5),
               Col("status", cells["status"], justify="left")]
    return fitted_table(columns, width, title=title, title_justify="left")


# ------------------------------------------------------------------ tables in narrow terminals


@dataclass
class Col:
    """One column of a table fitted to a width: ``numeric`` cells are never wrapped or cut, text
    folds; a column with ``drop`` > 0 may be left out where the table does not fit, the
    highest ``drop`` first. ``floor``: the width a text column should keep before columns go."""

    header: str
    cells: list[str]
    numeric: bool = True
    drop: int = 0
    floor: int = 8
    justify: str | None = None


def _cell_width(cell: Any, *, words: bool = False) -> int:
    from rich.text import Text

    text = cell if isinstance(cell, Text) else Text.from_markup(str(cell))
    parts = text.plain.split() if words else text.plain.splitlines()
    return max((Text(part).cell_len for part in parts), default=0)


def _need(columns: list[tuple[bool, int, list[Any]]]) -> int:
    """The narrowest width that shows every number whole: numeric columns at their widest cell,
    text columns at ``floor`` (or their longest word), padding and borders."""
    total = len(columns) + 1
    for numeric, floor, cells in columns:
        if numeric:
            total += max(_cell_width(c) for c in cells) + 2
        else:
            total += min(max(_cell_width(c, words=True) for c in cells), floor) + 2
    return total


def fitted_table(columns: list[Col], width: int, *, sections: tuple[int, ...] = (),
                 **table_kw: Any) -> Table:
    """A rich table that fits ``width`` without cutting a number: low-value columns are left
    out (named in the caption) until it fits; :func:`print_table` prints whatever is still too
    wide wider than the terminal. ``sections``: row indices that start a new section."""
    shown = list(columns)
    dropped: list[str] = []
    while _need([(c.numeric, c.floor, [c.header, *c.cells]) for c in shown]) > width:
        droppable = [c for c in shown if c.drop]
        if not droppable:
            break
        worst = max(droppable, key=lambda c: c.drop)
        shown.remove(worst)
        dropped.append(worst.header.replace("\n", " "))
    if dropped:
        table_kw.setdefault("caption", f"left out at {width} columns: {', '.join(dropped)}")
        table_kw.setdefault("caption_justify", "left")
    table = Table(**table_kw)
    for c in shown:
        table.add_column(c.header, justify=c.justify or ("right" if c.numeric else "left"),  # type: ignore[arg-type]
                         no_wrap=c.numeric, overflow="fold")
    table.nnfin_floors = [c.floor for c in shown]  # type: ignore[attr-defined]
    for i in range(len(shown[0].cells) if shown else 0):
        if i in sections:
            table.add_section()
        table.add_row(*(c.cells[i] for c in shown))
    return table


def table_width(table: Table) -> int:
    """The narrowest width at which ``table`` shows every number whole."""
    floors = getattr(table, "nnfin_floors", [8] * len(table.columns))
    return _need([(col.no_wrap, floor, [col.header, *col.cells])
                  for col, floor in zip(table.columns, floors, strict=True)])


def print_table(console: Any, table: Table) -> None:
    """Print ``table`` on ``console``; one that needs more columns than the console has is
    printed wider (lines longer than the terminal) rather than cutting numbers to ``…``."""
    from rich.console import Console

    need = table_width(table)
    if need <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=need, highlight=False, color_system=console.color_system,
                   force_terminal=console.is_terminal, no_color=console.no_color)
    wide.print(table)


def unreadable_lines(rows: list[RunSummary]) -> list[str]:
    """One line per file that could not be read: ``<run>/<file>: unreadable: <reason>``."""
    return [f"{r.name}/{problem.replace(': ', ': unreadable: ', 1)}" for r in rows
            for problem in r.problems]


# ------------------------------------------------------------------ comparison


def config_differences(configs: list[dict[str, Any]], *, ignore: tuple[str, ...] = ("run.dir",)
                       ) -> list[tuple[str, list[Any]]]:
    """``(dotted key, value per run)`` for the keys whose values differ (``None``: absent);
    ``run.dir`` always differs and is left out."""
    flat = [flatten(c, deep=True) for c in configs]
    keys = sorted({k for f in flat for k in f} - set(ignore))
    rows = []
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def metric_rows(metrics: list[dict[str, Any] | None]) -> list[tuple[str, list[Any]]]:
    """Status, epochs, time and each split's metrics, one value per run (``None``: missing)."""
    ms = [m or {} for m in metrics]
    rows: list[tuple[str, list[Any]]] = [
        ("status", [m.get("status", MISSING) if m else MISSING for m in ms]),
        ("epochs", [m.get("epochs") for m in ms]),
        ("time_s", [m.get("time_s") for m in ms]),
    ]
    for split in SPLITS:
        for name in METRICS:
            values = [(m.get(split) or {}).get(name) for m in ms]
            if any(v is not None for v in values):
                rows.append((f"{split} {name}", values))
    return rows


def compare_table(title: str, labels: list[str], rows: list[tuple[str, list[Any]]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    for label in labels:
        table.add_column(label, justify="right")
    for key, values in rows:
        table.add_row(key, *(fmt(v) for v in values))
    return table


def compare_figure(histories: list[pd.DataFrame], labels: list[str]) -> Figure:
    """Loss curves of several runs on one log-scale plot: train solid, validation dashed."""
    import numpy as np

    from nnfin import plots

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for history, label, color in zip(histories, labels, colors, strict=True):
        for col, style, what in (("train_loss", "-", "train"), ("val_loss", "--", "val")):
            if col in history and history[col].notna().any():
                values = history[col].to_numpy(dtype=float)
                ax.plot(history["epoch"], np.where(values > 0, values, np.nan), style, color=color,
                        label=f"{label} ({what})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss curves", y=1.0)  # y: right above the panel, not searched for at each draw
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return plots.layout(fig)


IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_out(out: str | Path, *, force: bool = False) -> Path:
    """Refuse an existing ``out`` without ``force`` and names matplotlib cannot write."""
    from nnfin import files

    return files.check_target(out, force=force, field="--out", suffixes=IMAGE_SUFFIXES)


def save_figure(fig: Figure, out: str | Path, *, force: bool = False) -> Path:
    """Write ``fig`` to ``out``; an existing file needs ``force`` (nothing is overwritten)."""
    from nnfin import files

    return files.save_figure(fig, check_out(out, force=force), force=force, field="--out")
