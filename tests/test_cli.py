import json
from pathlib import Path

import pytest

from conftest import FAST, assert_one_line_error


def test_fit_writes_the_run_folder(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("fit", "--quiet", "-o", str(out), *[a for o in FAST for a in ("--set", o)])
    assert res.code == 0, res.err
    for name in ("config.toml", "metrics.json", "history.csv", "model.safetensors", "model.json",
                 "gradients.safetensors", "plots/fit.png", "plots/loss.png",
                 "checkpoints/last.ckpt"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["device"] == "cpu"
    assert set(metrics) >= {"train", "val", "test", "time_s", "versions"}
    assert "R²" in res.out and str(out) in res.out and "plots" in res.out
    # the resolved config reruns as is
    again = cli("fit", str(out / "config.toml"), "-q", "-o", str(tmp_path / "again"))
    assert again.code == 0, again.err
    a = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert a["test"]["mse"] == metrics["test"]["mse"]


def test_fit_with_no_arguments_runs_the_lecture_network(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("fit", "-q")
    assert res.code == 0, res.err
    runs = list(Path("runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "plots" / "fit.png").exists()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["test"]["r2"] > 0.999
    assert metrics["n_parameters"] == 1 * 6 + 6 + 6 * 6 + 6 + 6 + 1


def test_inspect_shows_parameters_and_gradients(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "-q", "-o", str(out), "--set", "model.kind=mlp-low", "--set",
               "train.epochs=2").code == 0
    res = cli("inspect", str(out))
    assert res.code == 0, res.err
    for frag in ("w1", "b3", "(6, 6)", "grad norm", "b2.grad"):
        assert frag in res.out


def test_diverged_run_says_so_and_saves_no_model(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("fit", "-q", "-o", str(out), "--set", "optim.name=sgd", "--set", "optim.lr=1e6")
    assert res.code == 1
    assert "diverged" in res.out and "lr = 1e+06" in res.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "step" in metrics["stop_reason"]
    assert not (out / "model.safetensors").exists()


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD = [
    (["--set", "model.activation=sigmod"], ["[model] activation = 'sigmod'", "'sigmoid'"]),
    (["--set", "model.kind=transformer"], ["[model] kind = 'transformer'"]),
    (["--set", "optim.name=adamm"], ["[optim] name = 'adamm'"]),
    (["--set", "train.loss=l3"], ["[train] loss = 'l3'"]),
    (["--set", "optim.lr=-0.1"], ["[optim] lr = -0.1"]),
    (["--set", "train.batch_size=5000"], ["[train] batch_size = 5000", "larger"]),
    (["--set", "train.epochs=0"], ["[train] epochs = 0"]),
    (["--set", "modle.kind=mlp"], ["unknown section [modle]", "'model'"]),
    (["--set", "model.neuron=[3]"], ["unknown key [model] neuron", "'neurons'"]),
    (["--set", "data.kind=tan"], ["[data] kind = 'tan'"]),
    (["--set", "train.device=cuda"], ["[train] device = 'cuda'"]),
    (["--set", "optim.lr"], ["--set 'optim.lr'"]),
    (["--set", "data.kind=file"], ["[data] kind = 'file' needs path"]),
    (["--set", "data.kind=file", "--set", "data.path=missing.csv"], ["missing.csv", "does not exist"]),
]


@pytest.mark.parametrize(("args", "fragments"), BAD)
def test_bad_input_is_one_line_exit_2(cli, tmp_path, args, fragments):
    res = cli("fit", "-q", "-o", str(tmp_path / "run"), *args)
    assert_one_line_error(res, *fragments)


@pytest.mark.parametrize(("content", "target", "fragments"), [
    ("x,y\n1,2\n2,abc\n3,4\n", "y", ["column 'y'", "not numeric"]),
    ("x,y\n1,2\n2,nan\n3,4\n", "y", ["column 'y'", "non-finite"]),
    ("x,y\n", "y", ["no rows"]),
    ("x,y\n1,2\n2,3\n", "price", ["column 'price' not found"]),
])
def test_bad_data_files(cli, tmp_path, content, target, fragments):
    path = _csv(tmp_path, content)
    res = cli("fit", "-q", "-o", str(tmp_path / "run"), "--set", "data.kind=file", "--set",
              f"data.path={path}", "--set", 'data.features=["x"]', "--set", f"data.target={target}")
    assert_one_line_error(res, *fragments)


def test_toml_syntax_error(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nneurons = [6, 6\nactivation = 'tanh'\n")
    assert_one_line_error(cli("fit", str(cfg)), "c.toml", "line")


def test_existing_run_dir_is_never_overwritten(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = cli("fit", "-q", "-o", str(out))
    assert_one_line_error(res, "already exists")
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_bad_config_leaves_no_run_folder(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "-o", str(out), "--set", "train.batch_size=100000").code == 2
    assert not out.exists() or not any(out.iterdir())


def test_inspect_missing_run(cli, tmp_path):
    assert_one_line_error(cli("inspect", str(tmp_path / "nope")), "does not exist")


def test_usage_error_exit_2(cli):
    assert cli("fit", "--no-such-flag").code == 2


def test_inspect_with_a_broken_gradients_file(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "-q", "-o", str(out), "--set", "train.epochs=1").code == 0
    (out / "gradients.safetensors").write_text("not a safetensors file")
    assert_one_line_error(cli("inspect", str(out)), "gradients.safetensors", "cannot be read")
