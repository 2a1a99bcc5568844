"""Bad inputs a user gives the newer features - nnfin export, [train] threads, nnfin.finance.greeks -
are refused in one line that names the argument, column or row and the value, and destroy nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin import files
from nnfin.config import load_config
from nnfin.errors import ConfigError, DataError, ExportError

BS = ["data.kind=black-scholes", "data.n=200", "model.neurons=[4]", "train.epochs=1",
      "train.progress=false", "train.device=cpu"]
OPTIONS = pd.DataFrame({"moneyness": [0.9, 1.0, 1.1], "tau": [0.5] * 3, "r": [0.05] * 3,
                        "sigma": [0.2] * 3})


@pytest.fixture(scope="module")
def cos_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "cos"
    nnfin.fit(overrides=[*FAST, "model.neurons=[4]"], run_dir=folder)
    return folder


@pytest.fixture(scope="module")
def bs_run():
    return nnfin.fit(overrides=BS, write=False)


# ---- nnfin export -------------------------------------------------------------------------------

def test_export_of_a_run_still_training_names_the_trainer(cos_run, tmp_path, cli):
    training = tmp_path / "training"  # what a fit has written before its end: no model yet
    training.mkdir()
    shutil.copy(cos_run / "config.toml", training / "config.toml")
    out = tmp_path / "m.pt2"
    assert_one_line_error(cli("export", str(training), "-o", str(out)), "training",
                          "no saved model")
    with files.RunLock(training, "nnfin fit"):
        result = cli("export", str(training), "-o", str(out))
    assert_one_line_error(result, str(training), "no saved model yet", "being trained",
                          f"process {os.getpid()}", "nnfin fit")
    assert not out.exists()


def test_lock_holder_only_looks(cos_run, tmp_path):
    assert files.lock_holder(tmp_path) is None  # no lock file: nobody, and none is created
    assert not (tmp_path / files.LOCK_NAME).exists()
    with files.RunLock(tmp_path, "nnfin resume"):
        assert "nnfin resume" in files.lock_holder(tmp_path)
    assert files.lock_holder(tmp_path) is None


@pytest.mark.parametrize("run, out, why", [
    (None, "m.pt2", "run = None"),
    (nn.Linear(1, 1), "m.pt2", "nnfin.load_run(folder, model=net)"),
    ("RUN", None, "out = None"),
    ("RUN", 123, "out = 123"),
])
def test_export_from_python_names_a_wrong_argument(cos_run, tmp_path, run, out, why):
    run = str(cos_run) if run == "RUN" else run
    with pytest.raises(ExportError) as info:
        nnfin.export(run, tmp_path / out if isinstance(out, str) else out)
    assert why in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["force", "check"])
def test_a_string_is_not_true_and_replaces_nothing(cos_run, tmp_path, flag):
    kept = tmp_path / "model.pt2"
    kept.write_text("mine")
    with pytest.raises(ExportError, match=f"{flag} = 'false' must be True or False"):
        nnfin.export(cos_run, kept, **{"force": True, flag: "false"})
    assert kept.read_text() == "mine"


# ---- [train] threads ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, fragments", [
    ('"AUTO"', ["[train] threads = 'AUTO'", "'auto' or a whole number", "did you mean 'auto'?"]),
    ('"two"', ["[train] threads = 'two'", "'auto' or a whole number of threads from 1 to 1024"]),
    ("2.5", ["[train] threads = 2.5", "'auto' or a whole number"]),
    ("{n = 2}", ["[train] threads = {'n': 2}", "'auto' or a whole number"]),
    ("[2]", ["[train] threads = [2]", "'auto' or a whole number"]),
    ("0", ["[train] threads = 0", "from 1 to 1024"]),
    ("1025", ["[train] threads = 1025", "from 1 to 1024"]),
    ("true", ["[train] threads = True", "not true or false"]),
    ("nan", ["[train] threads = nan", "finite"]),
])
def test_bad_threads_are_one_line(cli, tmp_path, value, fragments):
    result = cli("fit", *(a for s in FAST for a in ("--set", s)), "--set", f"train.threads={value}",
                 "-o", str(tmp_path / "run"))
    assert_one_line_error(result, *fragments)
    assert "threads.int" not in result.err
    config = tmp_path / "cfg.toml"
    config.write_text(f"[train]\nthreads = {value}\n")
    assert_one_line_error(cli("fit", str(config), "-o", str(tmp_path / "run")), *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, threads", [("auto", "auto"), (2, 2), ("2", 2), (" 3 ", 3),
                                            (2.0, 2), (1e3, 1000)])
def test_good_threads_are_taken(value, threads):
    assert load_config({"train": {"threads": value}}).train.threads == threads


# ---- nnfin.finance.greeks -------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["runs/bs", Path("runs/bs"), None, 3])
def test_greeks_of_something_that_is_not_a_run(run):
    with pytest.raises(ConfigError, match="greeks needs a trained run") as info:
        nnfin.finance.greeks(run, OPTIONS)
    assert repr(run) in str(info.value)


def test_greeks_refuse_a_feature_column_given_twice(bs_run):
    frame = pd.concat([OPTIONS, OPTIONS[["sigma"]]], axis=1)
    with pytest.raises(DataError, match="two columns named 'sigma'"):
        nnfin.finance.greeks(bs_run, frame)


@pytest.mark.parametrize("column, message", [
    (["0.05", "x", "0.05"], "frame column 'r' is not numeric: row 11 holds 'x'"),
    ([0.05, True, 0.05], "frame column 'r' is not numeric: row 11 holds True"),
    ([True, False, True], "column 'r' holds true/false values, not numbers (row 10: True)"),
    ([0.05 + 1j] * 3, "column 'r' holds complex values, not real numbers (row 10: (0.05+1j))"),
])
def test_greeks_name_the_row_and_value_that_is_not_a_number(bs_run, column, message):
    frame = OPTIONS.assign(r=pd.Series(column, dtype=None)).set_index(pd.Index([10, 11, 12]))
    with pytest.raises(DataError) as info:
        nnfin.finance.greeks(bs_run, frame)
    assert message in str(info.value)


@pytest.mark.parametrize("array, what", [(np.ones((2, 4), bool), "true/false"),
                                         (np.ones((2, 4)) + 1j, "complex")])
def test_greeks_refuse_arrays_of_booleans_or_complex_numbers(bs_run, array, what):
    with pytest.raises(DataError, match=f"inputs hold {what} values"):
        nnfin.finance.greeks(bs_run, array)


def test_greeks_still_take_numbers_given_as_text(bs_run):
    text = OPTIONS.astype(str)
    assert np.allclose(nnfin.finance.greeks(bs_run, text), nnfin.finance.greeks(bs_run, OPTIONS))


# ---- nnfin report: hedging options --------------------------------------------------------------

REPORT = ["--n", "200", "--no-train", "--hedge-paths", "20"]


@pytest.fixture(scope="module")
def bs_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "bs"
    nnfin.fit(overrides=[*BS, "run.plots=false"], run_dir=folder)
    return folder


@pytest.mark.parametrize("paths", ["1", "0", "-1"])
def test_fewer_than_two_hedging_paths_are_one_line(bs_folder, cli, paths):
    before = (bs_folder / "report" / "metrics.csv").read_bytes()
    result = cli("report", str(bs_folder), "--n", "200", "--no-train", "--hedge-paths", paths)
    assert_one_line_error(result, "--hedge-paths", f"'{paths}'", ">= 2")
    assert "RuntimeWarning" not in result.err
    assert (bs_folder / "report" / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("arguments, message", [
    ({"hedge_paths": 1}, "hedge_paths = 1 must be a whole number >= 2"),
    ({"hedge_paths": "10"}, "hedge_paths = '10' must be a whole number >= 2"),
    ({"hedge_paths": True}, "hedge_paths = True must be a whole number >= 2"),
    ({"hedge_paths": 2.5}, "hedge_paths = 2.5 must be a whole number >= 2"),
    ({"hedge_seed": -1}, "hedge_seed = -1 must be a whole number >= 0"),
    ({"hedge_seed": "x"}, "hedge_seed = 'x' must be a whole number >= 0"),
])
def test_evaluate_names_a_bad_hedging_argument(bs_run, arguments, message):
    from nnfin.app.report import evaluate

    with pytest.raises(ConfigError) as info:
        evaluate(bs_run, n=50, train=False, **{"hedge_paths": 20, **arguments})
    assert message in str(info.value)


def test_the_runs_report_folder_holds_only_this_reports_files(bs_folder, cli, tmp_path):
    folder = bs_folder / "report"
    (folder / "notes.txt").write_text("mine")
    assert cli("report", str(bs_folder), *REPORT).code == 0
    assert {"hedging.csv", "hedging.png", "greeks.png"} <= {p.name for p in folder.iterdir()}
    assert cli("report", str(bs_folder), *REPORT, "--no-hedge").code == 0
    names = {p.name for p in folder.iterdir()}
    assert "hedging.csv" not in names and "hedging.png" not in names, names
    assert "greeks.png" in names
    assert cli("report", str(bs_folder), *REPORT, "--no-plots").code == 0
    assert {p.name for p in folder.iterdir()} == {"metrics.csv", "hedging.csv", "report.json",
                                                  "notes.txt"}
    assert (folder / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"  # a folder of one's own: nothing in it is removed
    assert cli("report", str(bs_folder), *REPORT, "-o", str(mine)).code == 0
    assert cli("report", str(bs_folder), *REPORT, "--no-hedge", "-o", str(mine), "--force").code == 0
    assert (mine / "hedging.csv").exists()
