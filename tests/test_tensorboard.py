"""TensorBoard logs, read back with TensorBoard's own reader and compared with history.csv."""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest

import nnfin
from conftest import assert_one_line_error
from nnfin.errors import ConfigError
from nnfin.train.tensorboard import write_hparams

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator").EventAccumulator
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")


def _read(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                        "tensors": 0})
    return acc.Reload()


def test_scalars_equal_history_and_histograms_every_n(tmp_path, fast):
    run_dir = tmp_path / "run"
    nnfin.fit(overrides=[*fast, "train.epochs=5", "train.tensorboard=true",
                         "train.tensorboard_every=2", f"run.dir={run_dir}", "run.plots=false"])
    history = pd.read_csv(run_dir / "history.csv")
    acc = _read(run_dir / "tensorboard")
    tags = acc.Tags()
    for column in ("train_loss", "val_loss", "lr", "time"):
        events = acc.Scalars(column)
        assert [e.step for e in events] == history["epoch"].tolist()
        assert [e.value for e in events] == pytest.approx(history[column].tolist(), rel=1e-6)
    names = [name for name, _ in nnfin.load_run(run_dir).model.named_parameters()]
    for name in names:
        assert [e.step for e in acc.Histograms(f"weights/{name}")] == [1, 2, 4, 5]
        assert f"gradients/{name}" in tags["histograms"]
    assert tags["graph"]


def test_resume_continues_the_curves(tmp_path, fast):
    run_dir = tmp_path / "run"
    nnfin.fit(overrides=[*fast, "train.tensorboard=true", f"run.dir={run_dir}", "run.plots=false",
                         "run.checkpoint_every=1"])
    nnfin.resume(run_dir, epochs=6)
    history = pd.read_csv(run_dir / "history.csv")
    events = _read(run_dir / "tensorboard").Scalars("train_loss")
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in events] == pytest.approx(history["train_loss"].tolist(), rel=1e-6)


def test_cli_flag(cli, tmp_path, fast):
    run_dir = tmp_path / "cli-run"
    sets = [arg for item in fast for arg in ("--set", item)]
    result = cli("fit", "--tensorboard", "-q", *sets, "-o", str(run_dir))
    assert result.code == 0, result
    assert "tensorboard --logdir" in result.out
    assert "train_loss" in _read(run_dir / "tensorboard").Tags()["scalars"]


def test_missing_tensorboard_is_a_one_line_error(cli, tmp_path, fast, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    run_dir = tmp_path / "no-tb"
    sets = [arg for item in fast for arg in ("--set", item)]
    result = cli("fit", "--tensorboard", *sets, "-o", str(run_dir))
    assert_one_line_error(result, "[train] tensorboard = true", "pip install 'nnfin[tensorboard]'")
    assert not run_dir.exists()
    with pytest.raises(ConfigError, match=r"write_hparams needs the tensorboard package"):
        write_hparams(tmp_path / "hp", {"optim.lr": 0.1}, {"cv_mse": 1.0})


def test_write_hparams_reads_back(tmp_path):
    log_dir = write_hparams(tmp_path / "trial-0",
                            {"optim.lr": 0.01, "model.neurons": [6, 6], "model.activation": "tanh",
                             "early_stopping.enabled": True, "train.iterations": None},
                            {"cv_mse": 0.25, "cv_r2": 0.9, "bad": math.nan})
    acc = _read(log_dir)
    assert acc.Scalars("cv_mse")[0].value == pytest.approx(0.25)
    assert "bad" not in acc.Tags()["scalars"]
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["optim.lr"].number_value == pytest.approx(0.01)
    assert hp["model.neurons"].string_value == "[6, 6]"
    assert hp["model.activation"].string_value == "tanh"
    assert hp["early_stopping.enabled"].number_value == 1  # torch writes booleans as numbers
    assert hp["train.iterations"].string_value == "None"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == {"cv_mse", "cv_r2"}
