"""Tables at 80 and 60 columns keep every number whole; a search writes Optuna's plots too."""

from __future__ import annotations

import io
import itertools
import math

import pytest
from rich.console import Console

import nnfin
from conftest import FAST
from nnfin.app.runs_table import find_runs, print_table, runs_table
from nnfin.commands.tune import cv_table, ranking_table

WIDTHS = (80, 60)
PNG = b"\x89PNG\r\n\x1a\n"


def render(table, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), highlight=False, color_system=None)
    print_table(console, table)
    return console.file.getvalue()


def parse(text: str) -> list[dict[str, str]]:
    """The rows of a rendered table as ``{header: cell}`` (a row's first line; headers joined)."""
    lines = text.splitlines()
    head = [line for line in lines if line.startswith("┃")]
    names = [" ".join(parts).strip() for parts in
             zip(*[[c.strip() for c in line.strip("┃").split("┃")] for line in head], strict=True)]
    rows = []
    for line in lines:
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if any(cells):
                rows.append(dict(zip(names, cells, strict=True)))
    return rows


def same(cell: str, value: float) -> None:
    """``cell`` is ``value`` as printed (4 significant digits), whole."""
    assert cell == f"{value:.4g}", (cell, value)
    assert float(cell) == pytest.approx(value, rel=1e-3, abs=1e-12)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    space = 'tune.space={"optim.lr" = [0.01, 0.05], "model.activation" = ["tanh", "sigmoid"]}'
    return nnfin.tune(overrides=[*FAST, "tune.folds=2", "tune.refit=false", space, f"run.dir={run}"])


@pytest.mark.parametrize("width", WIDTHS)
def test_ranking_keeps_numbers_whole(search, width: int) -> None:
    out = render(ranking_table(search, 10, width), width)
    assert "…" not in out
    rows = parse(out)
    assert len(rows) == len(search.ranking) == 4
    for row, (_, r) in zip(rows, search.ranking.iterrows(), strict=True):
        assert row["trial"] == str(r["trial"])
        same(row["mean"], r["mean"])
        same(row["± std"], r["std"])
        same(row["lr"], r["optim.lr"])
        assert row["activation"] == r["model.activation"]


def test_search_writes_optuna_and_own_plots(search) -> None:
    plots = search.dir / "tune" / "plots"
    for name in ("history.png", "params.png", "optuna_history.png", "optuna_slice.png",
                 "optuna_importances.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name


def test_importances_need_two_parameters(tmp_path) -> None:
    run = tmp_path / "run"
    res = nnfin.tune(overrides=[*FAST, "tune.folds=2", "tune.refit=false",
                                'tune.space={"optim.lr" = [0.01, 0.05]}', f"run.dir={run}"])
    plots = run / "tune" / "plots"
    assert (plots / "optuna_history.png").is_file() and (plots / "optuna_slice.png").is_file()
    assert not (plots / "optuna_importances.png").exists()
    assert any("optuna_importances.png left out" in n for n in res.notes)


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    run = tmp_path_factory.mktemp("cv") / "run"
    return nnfin.cv(overrides=[*FAST, f"run.dir={run}"], folds=3)


@pytest.mark.parametrize("width", WIDTHS)
def test_cv_table_keeps_numbers_whole(folds, width: int) -> None:
    out = render(cv_table(folds, width), width)
    assert "…" not in out
    rows = {r["fold"]: r for r in parse(out)}
    for f in folds.folds:
        row = rows[str(f.fold + 1)]
        for head, key in (("MSE", "mse"), ("RMSE", "rmse"), ("MAE", "mae"), ("R²", "r2"),
                          ("loss", "loss")):
            if head in row or head in ("MSE", "R²"):  # MSE and R² are always shown
                same(row[head], f.metrics[key])
        assert row["epochs"] == str(f.epochs)
    s = folds.summary()
    same(rows["mean"]["MSE"], s["val_mse"]["mean"])
    same(rows["± std"]["R²"], s["val_r2"]["std"])


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_table_keeps_numbers_whole(tmp_path, width: int) -> None:
    for name, lr in (("a", 0.01), ("b", 0.0337)):
        nnfin.fit(overrides=[*FAST, "run.plots=false", f"optim.lr={lr}", f"run.dir={tmp_path / name}"])
    found = find_runs(tmp_path)
    out = render(runs_table(found, width=width), width)
    assert "…" not in out
    rows = {r["name"]: r for r in parse(out)}
    for r in found:
        row = rows[r.name]
        if "test MSE" in row:
            same(row["test MSE"], r.test_mse)
        else:  # left out, and said so
            assert "left out at 60 columns" in out and "test MSE" in out
        same(row["test R²"], r.test_r2)
        value, epoch = row["best val loss (model units) @ep"].split(" @")
        same(value, r.best_val)
        assert epoch == str(r.best_epoch)


def test_too_narrow_prints_wider_not_cut() -> None:
    from nnfin.app.runs_table import Col, fitted_table

    numbers = [1.234567e-05, -98765.4321, 0.5]
    table = fitted_table([Col(f"value {i}", [f"{v:.6g}" for v in numbers]) for i in range(6)], 40)
    out = render(table, 40)
    assert "…" not in out
    for row, v in zip(parse(out), numbers, strict=True):
        assert set(row.values()) == {f"{v:.6g}"}


def test_cli_cv_at_80_columns(cli, monkeypatch) -> None:
    import nnfin.commands.tune as commands

    buf = io.StringIO()
    monkeypatch.setattr(commands, "console", Console(width=80, file=buf, highlight=False))
    r = cli("cv", "-k", "2", "-q", *(x for o in FAST for x in ("--set", o)))
    assert r.code == 0, r
    out = buf.getvalue()
    assert "…" not in out
    rows = parse(out)
    assert [row["fold"] for row in rows] == ["1", "2", "mean", "± std"]
    for row in rows:
        assert math.isfinite(float(row["MSE"]))


def test_params_plot_labels_categories() -> None:
    import pandas as pd

    from nnfin.tune.report import params_figure

    df = pd.DataFrame({"state": ["COMPLETE"] * 6, "mean": [0.3, 0.2, 0.25, 0.1, 0.4, 0.35],
                       "optim.lr": [0.003, 0.03, 0.3, 0.003, 0.03, 0.3],
                       "model.neurons": ["[6, 6]", "[16, 16]", "[32, 32, 32]", "[8]", "[64, 64]",
                                         "[128, 128, 128]"]})
    fig = params_figure(df, ["optim.lr", "model.neurons"], "val_mse", set(), categorical={"optim.lr"})
    lr, neurons = fig.axes[:2]
    assert [t.get_text() for t in lr.get_xticklabels()] == ["0.003", "0.03", "0.3"]
    assert sorted(t.get_text() for t in neurons.get_xticklabels()) == sorted(df["model.neurons"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in (lr, neurons):
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
        assert not any(a.overlaps(b) for a, b in itertools.pairwise(boxes)), ax.get_xlabel()
