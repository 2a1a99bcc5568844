"""nnfin runs: the run table (status, best val loss, test metrics, sorting) and compare."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.app.runs_table import config_differences, find_runs, sort_runs
from nnfin.config import flatten
from nnfin.errors import ConfigError


def _set_status(run_dir, status: str) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["status"] = status
    path.write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """runs/: finished a and b (b has a lower lr), diverged, early-stopped, interrupted, killed."""
    root = tmp_path_factory.mktemp("runs")
    common = [*FAST, "run.plots=false"]
    nnfin.fit(overrides=[*common, f"run.dir={root / 'a'}"])
    nnfin.fit(overrides=[*common, f"run.dir={root / 'b'}", "optim.lr=0.01", "train.epochs=5"])
    nnfin.fit(overrides=[*common, f"run.dir={root / 'diverged'}", "optim.name=sgd", "optim.lr=1e6"])
    for name, status in (("stopped", "early-stopped"), ("study/trial-1", "interrupted")):
        shutil.copytree(root / "a", root / name)
        _set_status(root / name, status)
    (root / "killed").mkdir()
    shutil.copy(root / "a" / "config.toml", root / "killed" / "config.toml")
    return root


def test_statuses_and_values(root):
    rows = {r.name: r for r in find_runs(root)}
    assert {name: r.status for name, r in rows.items()} == {
        "a": "finished", "b": "finished", "diverged": "diverged", "stopped": "early-stopped",
        "study/trial-1": "interrupted", "killed": "running-or-killed"}
    history = pd.read_csv(root / "b" / "history.csv")
    metrics = json.loads((root / "b" / "metrics.json").read_text())
    b = rows["b"]
    assert b.best_val == pytest.approx(history["val_loss"].min())
    assert b.best_epoch == int(history["epoch"][history["val_loss"].idxmin()])
    assert b.test_mse == metrics["test"]["mse"] and b.test_r2 == metrics["test"]["r2"]
    assert b.epochs == 5 and b.seconds == metrics["time_s"]
    assert b.model == "mlp 6-6 sigmoid" and b.data == "cos"
    assert rows["killed"].test_mse is None and rows["killed"].epochs is None


def test_sorting(root):
    rows = find_runs(root)
    by_test = [r.test_mse for r in sort_runs(rows, "test")]
    known = [v for v in by_test if v is not None]
    assert known == sorted(known) and by_test[len(known):] == [None] * (len(by_test) - len(known))
    assert [r.name for r in sort_runs(rows, "name")] == sorted(r.name for r in rows)
    times = [r.started for r in sort_runs(rows, "time")]
    assert times == sorted(times)
    with pytest.raises(ConfigError, match="--sort 'fast' is not allowed; choose one of time"):
        sort_runs(rows, "fast")


def test_cli_list(cli, root, tmp_path):
    result = cli("runs", str(root), "--sort", "val")
    assert result.code == 0, result
    for word in ("finished", "diverged", "early-stopped", "interrupted", "running-or-killed",
                 "trial-1"):
        assert word in result.out
    assert cli("runs", "list", str(root)).out == cli("runs", str(root)).out  # list is the default
    (tmp_path / "empty").mkdir()
    assert "no runs under" in cli("runs", str(tmp_path / "empty")).out
    assert_one_line_error(cli("runs", str(tmp_path / "nope")), "runs folder", "nope")
    assert_one_line_error(cli("runs", str(root), "--sort", "size"), "--sort 'size'")


def test_cli_compare(cli, root, tmp_path):
    out = tmp_path / "compare.png"
    result = cli("runs", "compare", str(root / "a"), str(root / "b"), "--out", str(out))
    assert result.code == 0, result
    assert "optim.lr" in result.out and "train.epochs" in result.out
    assert "run.dir" not in result.out and "model.neurons" not in result.out
    assert "test r2" in result.out and out.stat().st_size > 0
    again = cli("runs", "compare", str(root / "a"), str(root / "b"), "--out", str(out))
    assert_one_line_error(again, "already exists", "--force")
    assert again.out == ""  # refused before printing anything
    assert cli("runs", "compare", str(root / "a"), str(root / "b"), "-o", str(out), "--force").code == 0
    killed = cli("runs", "compare", str(root / "a"), str(root / "killed"))
    assert killed.code == 0 and "running-or-killed" in killed.out and "configs: identical" in killed.out
    assert_one_line_error(cli("runs", "compare", str(root / "a"), str(tmp_path)), "not a run folder")
    assert_one_line_error(cli("runs", "compare", str(root / "a")), "two or more")


def test_flatten_and_differences():
    a = {"optim": {"lr": 0.1, "name": "adam"}, "model": {"neurons": [6, 6]}, "run": {"dir": "x"}}
    b = {"optim": {"lr": 0.1, "name": "sgd"}, "model": {"neurons": [6, 6], "init": "xavier"},
         "run": {"dir": "y"}}
    assert flatten(a) == {"optim.lr": 0.1, "optim.name": "adam", "model.neurons": [6, 6],
                          "run.dir": "x"}
    assert config_differences([a, b]) == [("model.init", [None, "xavier"]),
                                          ("optim.name", ["adam", "sgd"])]
