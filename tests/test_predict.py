"""nnfin predict RUN INPUT -o OUT: columns, formats, scaling, and refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.models import MLP


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-input, 1-output run on a file, so that column names and scaling matter."""
    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"S": rng.uniform(80, 120, 300), "K": rng.uniform(90, 110, 300)})
    frame["V"] = np.maximum(frame["S"] - frame["K"], 0.0)
    frame.to_csv(folder / "train.csv", index=False)
    nnfin.fit(overrides=[*FAST, "data.kind='file'", f"data.path='{folder / 'train.csv'}'",
                         "data.features=['S','K']", "data.target='V'", "model.neurons=[8]",
                         "run.plots=false", f"run.dir='{folder / 'run'}'"])
    return folder / "run"


@pytest.fixture
def inputs() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "K": [95.0, 100.0, 105.0],
                         "S": [100.0, 100.0, 100.0]})


@pytest.mark.parametrize("suffix_in, suffix_out", [(".csv", ".csv"), (".parquet", ".parquet"),
                                                   (".csv", ".pq")])
def test_predict_writes_inputs_and_predictions(trained, inputs, tmp_path, cli, suffix_in,
                                               suffix_out):
    src, out = tmp_path / f"in{suffix_in}", tmp_path / "sub" / f"out{suffix_out}"
    inputs.to_csv(src, index=False) if suffix_in == ".csv" else inputs.to_parquet(src)
    res = cli("predict", str(trained), str(src), "-o", str(out))
    assert res.code == 0, res.err
    assert "3 rows" in res.out and "V_pred" in res.out and str(out) in res.out
    got = pd.read_csv(out) if suffix_out == ".csv" else pd.read_parquet(out)
    assert list(got.columns) == ["id", "K", "S", "V_pred"]  # inputs kept, in their order
    assert got["id"].tolist() == ["a", "b", "c"]
    expected = nnfin.load_run(trained).predict(inputs[["S", "K"]].to_numpy())[:, 0]
    np.testing.assert_allclose(got["V_pred"].to_numpy(), expected, rtol=1e-12)


def test_predict_refuses_to_overwrite_without_force(trained, inputs, tmp_path, cli):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inputs.to_csv(src, index=False)
    out.write_text("precious\n")
    assert_one_line_error(cli("predict", str(trained), str(src), "-o", str(out)),
                          "out.csv", "already exists", "--force")
    assert out.read_text() == "precious\n"
    assert cli("predict", str(trained), str(src), "-o", str(out), "--force").code == 0
    assert "V_pred" in out.read_text()


def test_missing_columns_are_named_with_a_suggestion(trained, tmp_path, cli):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"s": [100.0], "Strike": [95.0]}).to_csv(src, index=False)
    res = cli("predict", str(trained), str(src), "-o", str(out))
    assert_one_line_error(res, "in.csv", "'S' (did you mean 's'?)", "'K'", "trained on S, K")
    assert not out.exists()


@pytest.mark.parametrize("content, fragments", [
    ("S,K\n100,abc\n", ("'K'", "not numeric", "row 0")),
    ("S,K\n100,\n", ("'K'", "missing or non-finite")),
    ("S,K,V_pred\n100,95,1\n", ("V_pred", "already has a column")),
    ("S,K\n", ("holds no rows",)),
])
def test_bad_input_data(trained, tmp_path, cli, content, fragments):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(content)
    assert_one_line_error(cli("predict", str(trained), str(src), "-o", str(out)), *fragments)
    assert not out.exists()


def test_bad_paths(trained, inputs, tmp_path, cli):
    src = tmp_path / "in.csv"
    inputs.to_csv(src, index=False)
    assert_one_line_error(cli("predict", str(trained), str(tmp_path / "nope.csv"), "-o",
                              str(tmp_path / "o.csv")), "nope.csv", "does not exist")
    assert_one_line_error(cli("predict", str(trained), str(src), "-o", str(tmp_path / "o.txt")),
                          "o.txt", "is not one of .csv, .parquet")
    assert_one_line_error(cli("predict", str(tmp_path / "norun"), str(src), "-o",
                              str(tmp_path / "o.csv")), "norun", "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("predict", str(tmp_path / "empty"), str(src), "-o",
                              str(tmp_path / "o.csv")), "empty", "neither a run folder")
    assert not (tmp_path / "o.csv").exists()


def test_predict_with_a_model_folder_and_a_state_dict(trained, inputs, tmp_path, cli):
    run = nnfin.load_run(trained)
    folder = nnfin.save(run, tmp_path / "exported")  # keeps names and scaling
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inputs.to_csv(src, index=False)
    assert cli("predict", str(folder), str(src), "-o", str(out)).code == 0, out
    np.testing.assert_allclose(pd.read_csv(out)["V_pred"],
                               run.predict(inputs[["S", "K"]].to_numpy())[:, 0], rtol=1e-12)
    nnfin.save(MLP(2, 1, [8]), tmp_path / "sd.pth", whole=False)
    assert_one_line_error(cli("predict", str(tmp_path / "sd.pth"), str(src), "-o",
                              str(tmp_path / "o2.csv"), "--trust"), "sd.pth", "no feature names")


def test_a_copied_run_predicts_the_same(trained, inputs, tmp_path, cli):
    moved = Path(shutil.copytree(trained, tmp_path / "elsewhere"))
    src = tmp_path / "in.parquet"
    inputs.to_parquet(src)
    assert cli("predict", str(moved), str(src), "-o", str(tmp_path / "a.csv")).code == 0
    assert cli("predict", str(trained), str(src), "-o", str(tmp_path / "b.csv")).code == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_nnfin_predict_is_a_library_function(tmp_path, fast):
    from nnfin.errors import WriteError

    run = nnfin.fit(overrides=[*fast, f"run.dir={tmp_path / 'r'}"])
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "id": ["a", "b", "c"]})
    expected = run.predict(frame)[:, 0]
    table = nnfin.predict(run.dir, frame)  # a run folder and a DataFrame
    assert list(table.columns) == ["x", "id", "y_pred"]
    np.testing.assert_allclose(table["y_pred"], expected, rtol=1e-12)
    arrays = nnfin.predict(run, np.array([[0.0], [1.0], [2.0]]))  # a Run and an array
    np.testing.assert_allclose(arrays["y_pred"], expected, rtol=1e-12)
    out = tmp_path / "p.parquet"
    nnfin.predict(run.dir, frame, out=out)
    np.testing.assert_allclose(pd.read_parquet(out)["y_pred"], expected, rtol=1e-12)
    with pytest.raises(WriteError, match="already exists"):
        nnfin.predict(run.dir, frame, out=out)
    nnfin.predict(run.dir, frame, out=out, force=True)


def test_predict_refuses_an_empty_frame_in_one_line():
    import pandas as pd

    import nnfin
    from nnfin.errors import DataError

    run = nnfin.fit({"train": {"epochs": 1, "progress": False}, "data": {"n": 200}}, write=False)
    with pytest.raises(DataError, match="holds no rows"):
        nnfin.predict(run, pd.DataFrame({"x": []}))
