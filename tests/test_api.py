"""The Python API is as complete as the command line: the same keywords, in-memory data, a
network of one's own, one re-run rule and saved models as predictors."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.errors import ConfigError, DataError, FileFormatError

QUICK = [*FAST, "run.plots=false"]

# root function -> CLI command; keywords of the root function that only Python has
COMMANDS = {"fit": "fit", "cv": "cv", "tune": "tune", "predict": "predict", "resume": "resume",
            "lr_find": "lr-find", "export": "export"}
PYTHON_ONLY = {"callbacks", "console", "write", "data", "model", "features", "target", "progress",
               "overrides"}
CLI_ONLY = {"set_": "overrides", "config": None, "quiet": None, "top": None}  # top: rows printed


def _options(command) -> set[str]:
    """The command's options (not its arguments), by Python name (``compile_`` -> ``compile``)."""
    return {p.name.rstrip("_") if p.name != "set_" else p.name for p in command.params
            if p.param_type_name == "option"}


@pytest.mark.parametrize("root", sorted(COMMANDS))
def test_every_cli_option_is_a_keyword_of_the_root_function_and_back(root):
    import typer.main

    from nnfin import cli

    cli._register()
    group = typer.main.get_command(cli.app)
    command = group.commands[COMMANDS[root]]
    options = _options(command)
    keywords = {name for name, p in inspect.signature(getattr(nnfin, root)).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY
                or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name in options)}
    for option in options:
        if option in CLI_ONLY:
            expected = CLI_ONLY[option]
            assert expected is None or expected in keywords, (root, option)
            continue
        assert option in keywords, f"nnfin.{root} lacks {option}= (nnfin {COMMANDS[root]} --{option})"
    for keyword in keywords - PYTHON_ONLY:
        assert keyword in options, f"nnfin.{root}({keyword}=) is no option of nnfin {COMMANDS[root]}"


def test_keywords_become_the_overrides_the_cli_builds(tmp_path):
    from nnfin.app.fit import option_overrides

    assert option_overrides(["a.b=1"], run_dir="r", device="cpu", tensorboard=False, compile=True,
                            distributed=False, folds=3, trials=4, storage="memory", study="s",
                            strategy="grid") == [
        "a.b=1", "run.dir=r", "train.device=cpu", "train.compile=true", "tune.folds=3",
        "tune.trials=4", 'tune.storage="memory"', 'tune.study="s"', 'tune.strategy="grid"']
    run = nnfin.fit(overrides="train.epochs=2", device="cpu", run_dir=tmp_path / "r",
                    progress=False)  # overrides: one string
    assert run.dir == tmp_path / "r" and run.config.train.epochs == 2
    assert run.config.train.device == "cpu"
    res = nnfin.cv(overrides=QUICK, folds=2, device="cpu", run_dir=tmp_path / "cv")
    assert len(res.folds) == 2 and (tmp_path / "cv" / "cv.json").is_file()


# ------------------------------------------------------------------------ in-memory data


def _xy(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    return x, np.sin(x[:, 0]) + x[:, 1] ** 2


def test_fit_on_arrays_and_on_a_dataframe(tmp_path):
    x, y = _xy()
    run = nnfin.fit(data=(x, y), overrides=QUICK, run_dir=tmp_path / "a")
    assert run.features == ["x1", "x2"] and run.targets == ["y"]
    assert run.metrics["train"]["n"] + run.metrics["val"]["n"] + run.metrics["test"]["n"] == 200
    assert run.predict(x[:3]).shape == (3, 1)
    assert (tmp_path / "a" / "model.json").is_file()

    frame = pd.DataFrame({"s": x[:, 0], "k": x[:, 1], "v": y, "note": 1.0})
    run = nnfin.fit(data=frame, features=["s", "k"], target="v", overrides=QUICK, write=False)
    assert run.features == ["s", "k"] and run.targets == ["v"]
    run = nnfin.fit({"data": {"features": ["k"], "target": "v"}}, data=frame, overrides=QUICK,
                    write=False)
    assert run.features == ["k"]
    named = nnfin.fit(data=(x, y), features=["a", "b"], target="z", overrides=QUICK, write=False)
    assert named.features == ["a", "b"] and named.targets == ["z"]


def test_in_memory_data_in_cv_and_with_derivatives():
    x, y = _xy()
    res = nnfin.cv(data=(x, y), folds=2, overrides=QUICK, write=False)
    assert len(res.folds) == 2 and res.folds[0].n_held_out > 0
    frame = pd.DataFrame({"x": x[:, 0], "y": np.sin(x[:, 0]), "dydx": np.cos(x[:, 0])})
    run = nnfin.fit({"data": {"target": "y", "derivatives": {"x": "dydx"}}}, data=frame,
                    overrides=QUICK, write=False)
    assert run.features == ["x"]


def test_bad_in_memory_data_is_one_line():
    with pytest.raises(DataError, match="X must be"):
        nnfin.fit(data=(np.zeros((5, 2)), np.zeros(4)), overrides=QUICK, write=False)
    with pytest.raises(DataError, match="DataFrame or a pair"):
        nnfin.fit(data="no", overrides=QUICK, write=False)


def test_resuming_a_run_on_in_memory_data_needs_the_same_data(tmp_path):
    x, y = _xy()
    run = nnfin.fit(data=(x, y), overrides=[*QUICK, "run.checkpoint_every=1"], run_dir=tmp_path / "r")
    with pytest.raises(DataError, match="in-memory data; resume needs them"):
        nnfin.resume(run.dir, epochs=4)
    with pytest.raises(DataError, match="in-memory data: sha256"):
        nnfin.resume(run.dir, epochs=4, data=_xy(seed=1))
    again = nnfin.resume(run.dir, epochs=4, data=(x, y))
    assert again.metrics["epochs"] == 4


# ------------------------------------------------------------------------ your own network


class TwoLayer(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_fit_trains_a_module_of_ones_own_and_load_run_needs_it(tmp_path):
    x, y = _xy()
    net = TwoLayer()
    run = nnfin.fit(data=(x, y), model=net, overrides=[*QUICK, "run.checkpoint_every=1"],
                    run_dir=tmp_path / "r")
    assert run.model is net
    spec = json.loads((tmp_path / "r" / "model.json").read_text())
    assert spec["model"]["kind"] == "user" and spec["model"]["class"].endswith("TwoLayer")
    with pytest.raises(FileFormatError, match="network of your own"):
        nnfin.load_run(tmp_path / "r")
    loaded = nnfin.load_run(tmp_path / "r", model=TwoLayer())
    np.testing.assert_allclose(loaded.predict(x[:5]), run.predict(x[:5]), rtol=1e-6)
    with pytest.raises(FileFormatError, match="do not fit"):
        nnfin.load_run(tmp_path / "r", model=TwoLayer(width=3))
    with pytest.raises(ConfigError, match="network of your own"):
        nnfin.resume(tmp_path / "r", epochs=4, data=(x, y))
    again = nnfin.resume(tmp_path / "r", epochs=4, data=(x, y), model=TwoLayer())
    assert again.metrics["epochs"] == 4


# ------------------------------------------------------------------------ re-running


def test_fit_refuses_an_existing_run_folder_unless_force(tmp_path, cli):
    out = tmp_path / "r"
    nnfin.fit(overrides=QUICK, run_dir=out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        nnfin.fit(overrides=QUICK, run_dir=out)
    run = nnfin.fit(overrides=[*QUICK, "train.epochs=2"], run_dir=out, force=True)
    assert run.metrics["epochs"] == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert (out / "notes.txt").read_text() == "mine"  # the user's file stays
    assert {p.name for p in (out / "checkpoints").iterdir()} <= {"last.ckpt", "prev.ckpt", "best.ckpt"}
    r = cli("fit", "--set", "train.epochs=1", "--set", "data.n=300", "--set", "run.plots=false",
            "-o", str(out), "--force", "-q")
    assert r.code == 0, r
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_force_never_replaces_a_folder_that_is_not_a_run(tmp_path, cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("# my own")
    with pytest.raises(ConfigError, match="not a previous nnfin fit run"):
        nnfin.fit(overrides=QUICK, run_dir=mine, force=True)
    assert (mine / "config.toml").read_text() == "# my own"
    assert sorted(p.name for p in mine.iterdir()) == ["config.toml"]
    assert_one_line_error(cli("fit", "-o", str(mine), "--force", "--set", "data.n=300"),
                          "not a previous nnfin fit run")
    cv_dir = tmp_path / "cv"
    nnfin.cv(overrides=QUICK, folds=2, run_dir=cv_dir)
    with pytest.raises(ConfigError, match="not a previous nnfin fit run"):
        nnfin.fit(overrides=QUICK, run_dir=cv_dir, force=True)  # a cv run is not a fit run
    with pytest.raises(ConfigError, match="--force"):
        nnfin.cv(overrides=QUICK, folds=2, run_dir=cv_dir)
    res = nnfin.cv(overrides=QUICK, folds=3, run_dir=cv_dir, force=True)
    assert len(json.loads((cv_dir / "cv.json").read_text())["per_fold"]) == 3 == len(res.folds)


# ------------------------------------------------------------------------ saved models


def test_a_saved_model_folder_is_a_predictor(tmp_path):
    from nnfin.sklearn import NNRegressor

    x = np.linspace(0, 1, 200).reshape(-1, 1)
    run = nnfin.fit(data=(x, 3 * x[:, 0] + 10), overrides=QUICK, write=False)
    folder = nnfin.save(run, tmp_path / "saved")
    loaded = nnfin.load_run(folder)
    np.testing.assert_allclose(loaded.predict(x), run.predict(x), rtol=1e-6)
    est = NNRegressor.from_run(folder)
    np.testing.assert_allclose(est.predict(x), run.predict(x)[:, 0], rtol=1e-6)
    # data units, differentiable; run.model works in standardized units
    t = torch.tensor(x, requires_grad=True)
    out = loaded.predict_tensor(t)
    np.testing.assert_allclose(out.detach().numpy(), run.predict(x), rtol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), t)
    assert grad.shape == t.shape and torch.isfinite(grad).all()
    raw = loaded.model(t.float()).detach().numpy()
    assert not np.allclose(raw, run.predict(x), rtol=1e-2)


def test_runs_is_a_root_function_and_folds_are_numbered_as_printed(tmp_path):
    first = nnfin.fit(overrides=["data.n=200", "train.epochs=2", "train.progress=false", "run.plots=false",
                                 f"run.dir={tmp_path / 'runs' / 'a'}"])
    table = nnfin.runs(tmp_path / "runs")
    assert list(table["name"]) == ["a"] and table["test_mse"][0] == first.metrics["test"]["mse"]
    from nnfin.runs import load_run  # the module of that name still imports

    assert load_run(tmp_path / "runs" / "a").features == ["x"]
    res = nnfin.cv(overrides=["data.n=200", "train.epochs=2", "train.progress=false"], folds=3, write=False)
    assert list(res.table()["fold"]) == [1, 2, 3]


def test_the_loss_history_says_its_units(tmp_path):
    run = nnfin.fit(overrides=["data.n=200", "train.epochs=2", "train.progress=false", "run.plots=false",
                               f"run.dir={tmp_path / 'r'}"])
    assert run.metrics["history_units"] == "standardized"
    raw = nnfin.fit(overrides=["data.n=200", "train.epochs=2", "train.progress=false", "run.plots=false",
                               "data.scale=false", f"run.dir={tmp_path / 'r2'}"])
    assert raw.metrics["history_units"] == "data"


def test_a_loaded_model_folder_predicts_in_data_units(tmp_path):
    run = nnfin.fit(overrides=["data.n=200", "train.epochs=3", "train.progress=false"], write=False)
    nnfin.save(run, tmp_path / "m")
    model = nnfin.load(tmp_path / "m")
    x = np.array([[0.0], [1.0], [2.0]])
    np.testing.assert_allclose(model.predict(x), run.predict(x), rtol=1e-12)
    raw = model(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    assert not np.allclose(raw, run.predict(x), atol=1e-3)  # calling the module: standardized units
    assert model.scaler is not None


def test_force_with_a_refused_config_keeps_the_previous_run(tmp_path):
    out = tmp_path / "run"
    nnfin.fit(overrides=[*QUICK, "train.epochs=2"], run_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".nnfin.lock"}
    with pytest.raises(ConfigError, match="batch_size"):
        nnfin.fit(overrides=[*QUICK, "train.batch_size=100000"], run_dir=out, force=True)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".nnfin.lock"}
    assert after == before
    assert nnfin.load_run(out).metrics["epochs"] == 2


def test_cv_force_with_a_refused_config_keeps_the_previous_cv(tmp_path):
    out = tmp_path / "cv"
    nnfin.cv(overrides=QUICK, folds=3, run_dir=out)
    before = (out / "cv.json").read_bytes(), (out / "config.toml").read_bytes()
    with pytest.raises(ConfigError, match="batch_size"):
        nnfin.cv(overrides=[*QUICK, "train.batch_size=100000"], folds=3, run_dir=out, force=True)
    assert ((out / "cv.json").read_bytes(), (out / "config.toml").read_bytes()) == before
    res = nnfin.cv(overrides=[*QUICK, "train.epochs=2"], folds=2, run_dir=out, force=True)
    assert len(res.folds) == 2 and len(pd.read_csv(out / "cv.csv")) == 2  # replaced by the new one
