"""Bad inputs around model files, run listings and cross-validation: one clear line each."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.errors import FileFormatError
from nnfin.models import MLP

# ------------------------------------------------------------------ refused pickles


class SystemCall:
    """Unpickling this runs a shell command - a malicious model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(SystemCall(marker), path)
    return path, marker


def test_a_pickle_calling_os_system_is_refused_and_says_why(tmp_path):
    path, marker = _evil(tmp_path)
    with pytest.raises(FileFormatError) as exc:
        nnfin.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and "evil.pth" in msg and "truncated" not in msg, msg
    assert "pickled Python objects" in msg and "system" in msg and "run code" in msg, msg
    assert "refused to unpickle" in msg and "--trust" in msg and "trust=True" in msg, msg
    assert not marker.exists()


def test_the_cli_refuses_it_in_one_line(tmp_path, cli):
    path, marker = _evil(tmp_path)
    (tmp_path / "in.csv").write_text("x\n0.5\n")
    res = cli("predict", str(path), str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert_one_line_error(res, "evil.pth", "system", "refused to unpickle", "--trust")
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("text", "named"), [
    ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
     "likely succeed.\n\n\nTrying to load unsupported GLOBAL posix.system whose module posix is "
     "blocked.\n", "posix.system"),
    ("Weights only load failed. This file can still be loaded...\n\tWeightsUnpickler error: "
     "Unsupported global: GLOBAL __main__.Evil was not an allowed global by default.", "__main__.Evil"),
    ("weights_only unpickler: global 'builtins.eval' is not allowlisted", ""),
    ("Unsupported operand 149", ""),
])
def test_every_wording_of_the_refusal_is_recognised(tmp_path, monkeypatch, text, named):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, path)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(text)

    monkeypatch.setattr("nnfin.saving.torch.load", refuse)
    with pytest.raises(FileFormatError) as exc:
        nnfin.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and "refused to unpickle" in msg and "--trust" in msg, msg
    assert "truncated" not in msg and named in msg, msg


# ------------------------------------------------------------------ predict with a whole model


@pytest.fixture
def whole(tmp_path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = MLP(2, 1, [4], "tanh")
    path = tmp_path / "whole.pth"
    torch.save(model, path)
    pd.DataFrame({"a": [0.5, 1.0, -2.0], "b": [1.5, 0.0, 3.0], "name": ["p", "q", "r"]}).to_csv(
        tmp_path / "in.csv", index=False)
    return path, model


def _expected(model: nn.Module, x: list[list[float]]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).numpy()[:, 0]


def test_predict_with_a_trusted_whole_model_takes_the_numeric_columns(whole, tmp_path, cli):
    path, model = whole
    out = tmp_path / "out.csv"
    res = cli("predict", str(path), str(tmp_path / "in.csv"), "-o", str(out), "--trust")
    assert res.code == 0, res
    assert "no data scaling" in res.out and "from a, b" in res.out
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["a", "b", "name", "y_pred"]
    expected = _expected(model, [[0.5, 1.5], [1.0, 0.0], [-2.0, 3.0]])
    assert np.allclose(frame["y_pred"], expected, atol=1e-6)


def test_predict_with_a_whole_model_and_features(whole, tmp_path, cli):
    path, model = whole
    out = tmp_path / "out.csv"
    res = cli("predict", str(path), str(tmp_path / "in.csv"), "-o", str(out), "--trust",
              "--features", "b,a")
    assert res.code == 0, res
    expected = _expected(model, [[1.5, 0.5], [0.0, 1.0], [3.0, -2.0]])
    assert np.allclose(pd.read_csv(out)["y_pred"], expected, atol=1e-6)


def test_a_plain_sequential_whole_model_works_too(tmp_path, cli):
    model = nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 2))
    torch.save(model, tmp_path / "seq.pt")
    (tmp_path / "in.csv").write_text("x\n0.5\n1.0\n")
    res = cli("predict", str(tmp_path / "seq.pt"), str(tmp_path / "in.csv"), "-o",
              str(tmp_path / "out.csv"), "--trust")
    assert res.code == 0, res
    assert list(pd.read_csv(tmp_path / "out.csv").columns) == ["x", "y1_pred", "y2_pred"]


@pytest.mark.parametrize(("args", "fragments"), [
    ([], ("whole.pth", "refused to unpickle", "--trust")),
    (["--trust", "--features", "a"], ("--features 'a'", "2 input(s)")),
    (["--trust", "--features", "a,c"], ("--features 'a,c'", "no column 'c'")),
])
def test_whole_model_mistakes_are_one_line(whole, tmp_path, cli, args, fragments):
    path, _ = whole
    res = cli("predict", str(path), str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"), *args)
    assert_one_line_error(res, *fragments)
    assert not (tmp_path / "out.csv").exists()


def test_too_many_numeric_columns_asks_for_features(whole, tmp_path, cli):
    path, _ = whole
    (tmp_path / "three.csv").write_text("a,b,c\n1,2,3\n")
    res = cli("predict", str(path), str(tmp_path / "three.csv"), "-o", str(tmp_path / "out.csv"),
              "--trust")
    assert_one_line_error(res, "2 input(s)", "3 numeric column(s)", "--features")


# ------------------------------------------------------------------ nnfin runs


def _fake_run(folder: Path, status: str = "finished") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('[model]\nkind = "mlp"\nneurons = [6, 6]\n[data]\nkind = "cos"\n')
    (folder / "metrics.json").write_text(json.dumps({"status": status, "epochs": 2,
                                                     "test": {"mse": 0.5, "r2": 0.9}}))
    (folder / "history.csv").write_text("epoch,train_loss,val_loss,time\n1,0.5,0.6,0.1\n2,0.4,0.5,0.2\n")
    return folder


def test_runs_lists_the_readable_runs_and_marks_the_broken_ones(tmp_path, cli):
    root = tmp_path / "runs"
    _fake_run(root / "good")
    (_fake_run(root / "badcfg") / "config.toml").write_text("[model\nkind = 'mlp'\n")
    (_fake_run(root / "badhist") / "history.csv").write_bytes(b"epoch,train_loss\n1,\xff\xfe\n")
    (_fake_run(root / "badmetrics") / "metrics.json").write_bytes(b"\xff\xfe{")
    res = cli("runs", str(root), "--sort", "name")
    assert res.code == 0, res
    assert "Traceback" not in res.out + res.err and "error:" not in res.err
    for name in ("good", "badcfg", "badhist", "badmetrics"):
        assert name in res.out
    assert "finished" in res.out
    assert "badcfg/config.toml: unreadable:" in res.out
    assert "badhist/history.csv: unreadable: not UTF-8 text" in res.out
    assert "badmetrics/metrics.json: unreadable: not UTF-8 text" in res.out

    from nnfin.app.runs_table import find_runs

    rows = {r.name: r for r in find_runs(root)}
    assert rows["good"].status == "finished" and rows["good"].best_val == pytest.approx(0.5)
    assert rows["badcfg"].status.startswith("unreadable: config.toml: ")
    assert rows["badhist"].status.startswith("unreadable: history.csv: not UTF-8 text")
    assert rows["badhist"].test_mse == pytest.approx(0.5)  # what could be read is still shown


# ------------------------------------------------------------------ nnfin cv


def test_cv_with_every_fold_diverging_says_so_and_exits_1(tmp_path, cli):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cli("cv", *(a for o in FAST for a in ("--set", o)), "--set", 'optim.name="sgd"',
                  "--set", "optim.lr=1e6", "--set", "run.plots=false", "--folds", "3", "-q",
                  "-o", str(tmp_path / "cv"))
    assert res.code == 1, res
    text = " ".join(res.out.split())
    assert "diverged: every fold diverged" in text and "lr = 1e+06" in text, text
    assert not re.search(r"\b(inf|nan)\b", text), text  # numbers, not the words
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], \
        [str(w.message) for w in caught]
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_folds"] == [1, 2, 3]
    assert summary["mean"] is None


def _partly_diverged():
    from nnfin.config import load_config
    from nnfin.train.folds import CVResult, FoldResult

    def fold(i: int, mse: float, status: str = "finished") -> FoldResult:
        metrics = {"mse": mse, "rmse": mse ** 0.5, "mae": mse, "r2": 1 - mse, "max_abs_error": mse,
                   "loss": mse, "n": 10}
        return FoldResult(i, metrics, status, 3, 0.1, 20, 10)

    inf = {"status": "diverged"}
    res = CVResult(load_config({}), "val_mse", [fold(0, 0.2), fold(1, float("inf"), **inf),
                                                 fold(2, 0.4)])
    return res


def test_cv_result_leaves_diverged_folds_out_of_the_finite_mean():
    res = _partly_diverged()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert res.diverged_folds == [2] and res.status == "partly-diverged"
        assert res.finite_mean == pytest.approx(0.3) and res.finite_std == pytest.approx(0.1)
        assert res.mean == float("inf")  # a search still ranks it last
        summary = res.summary()
    assert summary["mean"] == pytest.approx(0.3) and summary["diverged_folds"] == [2]
    assert json.dumps(summary, allow_nan=False)


def test_cv_cli_with_one_fold_diverging(monkeypatch, cli):
    res = _partly_diverged()
    monkeypatch.setattr("nnfin.app.cv.cross_validate", lambda *a, **k: res)
    out = cli("cv", "-q")
    assert out.code == 1, out
    text = " ".join(out.out.split())
    assert "diverged: fold(s) 2 of 3 diverged" in text, text
    assert "val_mse: 0.3 ± 0.1 over the 2 of 3 folds that did not diverge" in text, text
    assert not re.search(r"\b(inf|nan)\b", text), text  # numbers, not the words


# ------------------------------------------------------------------ nnfin inspect FILE


def test_inspect_a_model_file_points_to_predict(tmp_path, cli):
    path = tmp_path / "model.pth"
    torch.save(MLP(1, 1, [4]).state_dict(), path)
    assert_one_line_error(cli("inspect", str(path)), "model.pth", "is a file, not a run folder",
                          "nnfin inspect takes a run folder", "nnfin predict FILE")
    with pytest.raises(FileFormatError, match="is a file, not a run folder"):
        nnfin.load_run(path)


# ------------------------------------------------------------------ model.json fields


@pytest.mark.parametrize(("change", "fragments"), [
    ({"features": []}, ('"features" = []', "non-empty list")),
    ({"features": None}, ('no "features"',)),
    ({"features": "x"}, ('"features" = "x"',)),
    ({"features": ["x", "x"], "in_dim": 2}, ('"features" names \'x\' twice',)),
    ({"in_dim": 3}, ('"in_dim" = 3', '"features"')),
    ({"targets": []}, ('"targets" = []',)),
    ({"dtype": "float99"}, ('"dtype" = "float99"',)),
])
def test_bad_model_json_fields_are_one_line_errors(tmp_path, cli, change, fragments):
    folder = nnfin.save(MLP(1, 1, [4]), tmp_path / "m")
    spec = json.loads((folder / "model.json").read_text())
    spec.update(change)
    spec = {k: v for k, v in spec.items() if v is not None}
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(FileFormatError) as exc:
        nnfin.load(folder)
    assert "model.json" in str(exc.value) and all(f in str(exc.value) for f in fragments), exc.value
    (tmp_path / "in.csv").write_text("x\n0.5\n")
    res = cli("predict", str(folder), str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert_one_line_error(res, "model.json", *fragments)
