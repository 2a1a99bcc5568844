"""Inputs a hostile (or hurried) user tries: each is one line naming the problem, or it works."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
import torch

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.config import load_config
from nnfin.errors import ConfigError, DataError, FileFormatError, NNFinError

TINY = [*FAST, "run.plots=false"]


def sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.mark.parametrize("argv, fragments", [
    (["data", "black-scholes", "--n", "nan", "--out", "x.csv"], ["--n", "'nan'", "nnfin data --help"]),
    (["data", "black-scholes", "--bogus"], ["--bogus"]),
    (["report", "somewhere", "--n", "0"], ["--n", "'0'"]),
    (["fit", "--nope"], ["--nope", "nnfin fit --help"]),
    (["no-such-command"], ["no-such-command"]),
])
def test_option_errors_are_one_line_not_a_usage_box(cli, tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    result = cli(*argv)
    assert_one_line_error(result, *fragments)
    assert "Usage:" not in result.err and "╭" not in result.err


def test_help_still_works(cli):
    result = cli("fit", "--help")
    assert result.code == 0 and "Usage" in result.out


@pytest.fixture
def run_dir(tmp_path):
    return nnfin.fit(overrides=[*TINY, f"run.dir={tmp_path / 'r'}"]).dir


def _edit_spec(run_dir, **changes):
    path = run_dir / "model.json"
    spec = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "activation":
            spec["model"]["activation"] = value
        else:
            spec[key] = value
    path.write_text(json.dumps(spec))


def test_a_bad_architecture_in_model_json_is_one_line_naming_the_field(cli, run_dir):
    _edit_spec(run_dir, activation="os.system")
    assert_one_line_error(cli("inspect", str(run_dir)), "model.json", "activation = 'os.system'")


@pytest.mark.parametrize("weights", ["/etc/passwd", "../other/model.safetensors", ".."])
def test_model_json_cannot_point_at_files_outside_its_folder(cli, run_dir, weights):
    _edit_spec(run_dir, weights=weights)
    assert_one_line_error(cli("inspect", str(run_dir)), "model.json", "must be the name of a file beside it")


def test_load_run_with_a_non_utf8_history_names_the_file(run_dir):
    (run_dir / "history.csv").write_bytes(b"epoch,step,train_loss\n\xff\xfe\x00bad\n")
    with pytest.raises(FileFormatError, match=r"history\.csv.*not UTF-8"):
        nnfin.load_run(run_dir)


@pytest.mark.parametrize("item", ["train.epochs=true", "model.neurons=[true,6]", "data.n=true",
                                  "optim.lr=false", "optim.betas=[0.9,true]"])
def test_true_and_false_are_not_numbers(item):
    with pytest.raises(ConfigError, match="must be a number, not true or false"):
        load_config(None, [item])


def test_booleans_still_set_boolean_keys():
    cfg = load_config(None, ["data.scale=false", "train.progress=false"])
    assert cfg.data.scale is False and cfg.train.progress is False


def test_a_csv_with_a_repeated_column_name_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("x,x,y\n1,2,3\n4,5,6\n")
    cfg = load_config(None, ["data.kind=file", f"data.path={path}", 'data.features=["x"]', "data.target=y"])
    with pytest.raises(DataError, match="two columns named 'x'"):
        nnfin.data.build_data(cfg.data)


def test_features_named_twice_are_refused_at_load():
    with pytest.raises(ConfigError, match="names column 'x' twice"):
        load_config(None, ['data.features=["x", "x"]'])


@pytest.mark.parametrize("args, fragment", [
    (["--set", "x=1e400", "--param", "w=1"], "--set x '1e400' is not a finite number"),
    (["--set", "x=1", "--param", "w=pi/0"], "--param w 'pi/0' is not a finite number"),
])
def test_explain_refuses_values_that_are_not_finite(cli, args, fragment):
    assert_one_line_error(cli("explain", "cos(w*x)", *args), fragment)


def test_a_data_path_in_a_config_file_is_relative_to_that_file(cli, tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    rows = "\n".join(f"{i / 10},{(i / 10) ** 2}" for i in range(80))
    (folder / "d.csv").write_text("x,y\n" + rows + "\n")
    (folder / "cfg.toml").write_text('[data]\nkind = "file"\npath = "d.csv"\nfeatures = ["x"]\n'
                                     'target = "y"\n[train]\nepochs = 2\nbatch_size = 16\n'
                                     'progress = false\n[run]\nplots = false\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = cli("fit", "-q", "-o", "r1", str(folder / "cfg.toml"))
    assert first.code == 0, first
    monkeypatch.chdir(tmp_path)  # the run's own config reruns from anywhere
    again = cli("fit", "-q", "-o", "r2", str(elsewhere / "r1" / "config.toml"))
    assert again.code == 0, again
    assert_one_line_error(cli("fit", "-q", "-o", "r3", *sets("data.kind=file", "data.path=d.csv",
                                                             'data.features=["x"]', "data.target=y")),
                          "d.csv", "does not exist")  # --set paths: the working directory


def test_config_files_that_are_not_files_or_start_with_a_bom(cli, tmp_path):
    assert_one_line_error(cli("fit", os.devnull), "is not a regular file")
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 2\n")
    assert load_config(bom).train.epochs == 2


def test_a_tampered_checkpoint_with_a_pickle_names_the_global_and_runs_nothing(tmp_path):
    from nnfin.train.checkpoint import MAGIC, load_checkpoint

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    torch.save({"format": "nnfin-checkpoint", "x": Evil()}, buf)
    payload = buf.getvalue()
    path = tmp_path / "last.ckpt"
    path.write_bytes(payload + MAGIC + hashlib.sha256(payload).digest())
    with pytest.raises(FileFormatError, match=r"pickled Python objects \(global posix\.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_the_python_api_refuses_a_config_of_the_wrong_type():
    with pytest.raises(ConfigError, match="config = 12345 must be a TOML file path"):
        nnfin.fit(12345)


def test_overrides_may_be_one_string():
    assert load_config(None, "train.epochs=3").train.epochs == 3


# ------------------------------------------------------------------ the Python API's inputs

Q = ["train.epochs=2", "run.plots=false", "train.progress=false", "data.n=200"]


def _xy(n=200):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 2))
    return x, x.sum(1)


@pytest.mark.parametrize("frame_kind", ["empty", "repeated", "complex"])
def test_in_memory_data_that_cannot_be_used_is_one_line(frame_kind):
    import numpy as np
    import pandas as pd

    x, y = _xy()
    data = {"empty": pd.DataFrame(),
            "repeated": pd.DataFrame(np.c_[x, y], columns=["a", "a", "y"]),
            "complex": (x.astype(complex), y)}[frame_kind]
    with pytest.raises(DataError, match="data = "):
        nnfin.fit(data=data, features=["a"] if frame_kind == "repeated" else None, overrides=Q, write=False)


class _NoParams(torch.nn.Module):
    def forward(self, x):
        return x[:, :1]


class _Flat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.layer(x)[:, 0]  # (n,), not (n, 1): would broadcast against the targets


class _Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.layer(x), x


@pytest.mark.parametrize("model, fragment", [
    (lambda: torch.nn.Linear(2, 3), "returns shape (2, 3)"),
    (lambda: torch.nn.Linear(5, 1), "cannot take the 2 input(s)"),
    (_NoParams, "no trainable parameters"),
    (lambda: torch.nn.Linear(2, 1).requires_grad_(False), "no trainable parameters"),
    (_Flat, "returns shape (2,)"),
    (_Pair, "returns a tuple"),
])
def test_a_network_of_ones_own_that_cannot_train_is_refused_before_training(model, fragment):
    with pytest.raises(NNFinError) as exc:
        nnfin.fit(data=_xy(), model=model(), overrides=Q, write=False)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_force_does_not_take_a_users_files_for_a_previous_run(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}')
    (mine / "config.toml").write_text("# my notes\n")
    with pytest.raises(ConfigError, match="not a previous nnfin fit run"):
        nnfin.fit(data=_xy(), run_dir=mine, force=True, overrides=Q)
    assert (mine / "metrics.json").read_text() == '{"mine": 1}'
    assert (mine / "config.toml").read_text() == "# my notes\n"


@pytest.mark.parametrize("overrides", [5, ["train.epochs=2", 3]])
def test_overrides_of_the_wrong_type_are_one_line(overrides):
    with pytest.raises(ConfigError, match="overrides"):
        nnfin.fit(overrides=overrides, write=False)


def test_predict_refuses_text_and_missing_values_and_keeps_floats_for_integers(tmp_path):
    import numpy as np

    run = nnfin.fit(data=_xy(), overrides=Q, write=False)
    with pytest.raises(DataError, match="not numeric"):
        run.predict([["x", "y"]])
    with pytest.raises(DataError, match="row 0, feature 'x1'"):
        run.predict([[np.nan, 0.1]])
    as_int = run.predict_tensor(torch.tensor([[1, 0]]))
    assert as_int.is_floating_point()
    torch.testing.assert_close(as_int, run.predict_tensor(torch.tensor([[1.0, 0.0]], dtype=torch.float64)))


def test_nnfin_runs_shows_a_finished_cv(tmp_path):
    nnfin.cv(overrides=Q, folds=2, run_dir=tmp_path / "runs" / "cv1")
    table = nnfin.runs(tmp_path / "runs")
    assert table["status"][0] == "cv finished"
