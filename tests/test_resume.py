"""Exact resume: an interrupted and resumed run ends bit-identical to the run left alone."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import nnfin
from conftest import assert_one_line_error
from nnfin.app.resume import ResumeWarning
from nnfin.errors import ConfigError, DataError, FileFormatError
from nnfin.train.callbacks import Callback
from nnfin.train.checkpoint import load_checkpoint

BASE = ["train.device=cpu", "train.progress=false", "data.n=400", "run.plots=false",
        "run.checkpoint_every=1"]


class InterruptAt(Callback):
    """Sends a real SIGINT (Ctrl-C) to this process after the given optimizer step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def weights(run) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.model.parameters()]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


CASES = {
    "sgd-shuffle": ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9"],
    "adam-choice": ["optim.name=adam", "train.sampling=choice"],
    "adam-step-schedule": ["optim.name=adam", "optim.schedule=step", "optim.step_size=2"],
    "adam-onecycle": ["optim.name=adam", "optim.schedule=onecycle"],
    "lbfgs-full": ["optim.name=lbfgs", "optim.lr=1", "train.sampling=full", "optim.max_iter=5"],
    "gd-choice-l2": ["optim.name=gd", "optim.lr=0.5", "train.sampling=choice", "penalty.l2=1e-3"],
    "rmsprop-plateau": ["optim.name=rmsprop", "optim.lr=0.003", "optim.schedule=plateau",
                        "optim.patience=0"],
    "iterations-float64": ["train.iterations=37", "train.dtype=float64", "model.kind=mlp-low"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_interrupted_mid_epoch_and_resumed_is_bit_identical(tmp_path, case):
    over = [*BASE, "train.epochs=6", *CASES[case]]
    full = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'full'}"])
    steps = full.metrics["steps"]
    stop_at = random.Random(case).randrange(1, steps - 1)
    part = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'part'}"],
                     callbacks=[InterruptAt(stop_at)])
    assert part.metrics["status"] == "interrupted" and part.metrics["steps"] == stop_at
    resumed = nnfin.resume(tmp_path / "part")
    assert resumed.metrics["status"] == "finished" and resumed.metrics["steps"] == steps
    assert_same(weights(full), weights(resumed))
    cols = ["epoch", "step", "train_loss", "lr"]
    pd.testing.assert_frame_equal(full.history[cols], resumed.history[cols])


def test_interrupted_at_an_epoch_boundary_and_extended(tmp_path):
    over = [*BASE, "optim.schedule=exponential", "optim.gamma=0.9"]
    full = nnfin.fit(overrides=[*over, "train.epochs=7", f"run.dir={tmp_path / 'full'}"])
    nnfin.fit(overrides=[*over, "train.epochs=3", f"run.dir={tmp_path / 'part'}"])
    resumed = nnfin.resume(tmp_path / "part", epochs=7)  # extends a finished run
    assert_same(weights(full), weights(resumed))


def test_early_stopping_state_survives_resume(tmp_path):
    over = [*BASE, "train.epochs=200", "early_stopping.enabled=true", "early_stopping.patience=4",
            "data.noise=0.3", "model.neurons=[24, 24]", "optim.lr=0.05"]
    full = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'full'}"])
    assert full.metrics["status"] == "early-stopped"
    stop_epoch = full.metrics["epochs"]
    part = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'part'}"],
                     callbacks=[InterruptAt(full.metrics["steps"] - 15)])
    assert part.metrics["status"] == "interrupted"
    resumed = nnfin.resume(tmp_path / "part")
    assert resumed.metrics["status"] == "early-stopped"
    assert resumed.metrics["epochs"] == stop_epoch
    assert resumed.metrics["restored_epoch"] == full.metrics["restored_epoch"]
    assert_same(weights(full), weights(resumed))


def test_corrupted_last_checkpoint_falls_back_and_says_so(tmp_path):
    over = [*BASE, "train.epochs=4"]
    full = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'full'}"])
    nnfin.fit(overrides=[*over, "train.epochs=3", f"run.dir={tmp_path / 'part'}"])
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.warns(ResumeWarning, match=r"last\.ckpt.*corrupted.*falling back"):
        resumed = nnfin.resume(tmp_path / "part", epochs=4)
    assert_same(weights(full), weights(resumed))


def test_truncated_checkpoints_everywhere_is_an_error(tmp_path):
    nnfin.fit(overrides=[*BASE, "train.epochs=2", f"run.dir={tmp_path / 'r'}"])
    for name in ("last.ckpt", "prev.ckpt"):
        path = tmp_path / "r" / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FileFormatError, match=r"no usable checkpoint.*truncated"):
        nnfin.resume(tmp_path / "r", epochs=5)


def test_resume_refuses_other_data(tmp_path):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": range(100), "y": [v * 0.5 for v in range(100)]}).to_csv(csv, index=False)
    over = [*BASE, "train.epochs=2", "data.kind=file", f"data.path={csv}"]
    nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'r'}"])
    pd.DataFrame({"x": range(100), "y": [v * 0.7 for v in range(100)]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"data differ.*d\.csv.*sha256"):
        nnfin.resume(tmp_path / "r", epochs=4)


def test_resume_refuses_incompatible_config(tmp_path):
    nnfin.fit(overrides=[*BASE, "train.epochs=2", f"run.dir={tmp_path / 'r'}"])
    with pytest.raises(ConfigError, match=r"cannot change model\.neurons.*\[6, 6\].*\[8\]"):
        nnfin.resume(tmp_path / "r", epochs=4, overrides=["model.neurons=[8]"])


def test_cli_resume(cli, tmp_path):
    run = tmp_path / "r"
    assert cli("fit", "-q", "-o", str(run), "--set", "train.epochs=2").code == 0
    assert_one_line_error(cli("resume", str(run)), "already ended", "--epochs")
    res = cli("resume", str(run), "-q", "--epochs", "3")
    assert res.code == 0, res.err
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
    assert_one_line_error(cli("resume", str(tmp_path / "nope")), "does not exist")


def test_lecture_flow_from_python(tmp_path):
    """Rebuild model and optimizer, load the state dicts, model.train(), continue."""
    from nnfin.models import MLP

    run = nnfin.fit(overrides=[*BASE, "train.epochs=2", f"run.dir={tmp_path / 'r'}"])
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")
    model_reloaded = MLP(1, 1, [6, 6], "sigmoid")
    optimizer = torch.optim.Adam(model_reloaded.parameters(), lr=0.03)
    model_reloaded.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    model_reloaded.train()
    assert_same(weights(run), list(model_reloaded.parameters()))
    x = torch.linspace(-1, 1, 64).reshape(-1, 1)
    loss = torch.nn.functional.mse_loss(model_reloaded(x), torch.cos(x))
    loss.backward()
    optimizer.step()
    assert int(optimizer.state_dict()["state"][0]["step"]) == state["train_state"]["step"] + 1


def _kill_once(tmp_path: Path, seed: int, cfg: Path, ref: list[torch.Tensor]) -> None:
    run_dir = tmp_path / f"killed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnfin", "fit", str(cfg), "-q", "-o",
                             str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 60
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.8))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = nnfin.resume(run_dir) if not _finished(run_dir) else None
    final = resumed if resumed is not None else nnfin.load_run(run_dir)
    assert_same(ref, weights(final))


def _finished(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.exists() and json.loads(metrics.read_text()).get("status") == "finished"


def test_sigkill_at_random_moments_then_resume(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(nnfin.load_config(None, [*BASE, "train.epochs=60", "data.n=1000"]).to_toml())
    ref = weights(nnfin.fit(cfg, overrides=[f"run.dir={tmp_path / 'ref'}"]))
    for seed in range(3):
        _kill_once(tmp_path, seed, cfg, ref)


def test_interrupt_on_the_last_step_of_an_epoch_still_ends_that_epoch(tmp_path):
    """Regression: callbacks must see an epoch that completed just as Ctrl-C arrived."""
    over = [*BASE, "train.epochs=6", "early_stopping.enabled=true", "early_stopping.patience=50"]
    full = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'full'}"])
    steps_per_epoch = full.metrics["steps"] // 6
    part = nnfin.fit(overrides=[*over, f"run.dir={tmp_path / 'part'}"],
                     callbacks=[InterruptAt(2 * steps_per_epoch)])
    assert part.metrics["epochs"] == 2
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.ckpt")
    es = state["callbacks"]["EarlyStopping#0"]
    assert es["best_epoch"] in (1, 2) and es["best_epoch"] + es["wait"] == 2


def test_ctrl_c_in_nnfin_fit_writes_last_ckpt_and_exits_130(tmp_path):
    run_dir = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnfin", "fit", "-q", "-o", str(run_dir),
                             "--set", "train.epochs=100000", "--set", "run.checkpoint_every=1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)  # training has started once the first checkpoint is there
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"nnfin resume {run_dir}" in out.replace("\n", "")
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert state["train_state"]["status"] == "interrupted" and state["train_state"]["step"] > 0
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"


def test_resume_may_change_only_harmless_keys(tmp_path):
    nnfin.fit(overrides=[*BASE, "train.epochs=2", f"run.dir={tmp_path / 'r'}"])
    run = nnfin.resume(tmp_path / "r", epochs=3, overrides=["train.compile=false", "run.plots=false",
                                                            "train.device=cpu"])
    assert run.metrics["epochs"] == 3


class _EveryEpoch(Callback):
    """The weights, optimizer step count and history after every epoch."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, logs):
        step = next(iter(trainer.optimizer.state.values()))["step"].clone()
        self.seen.append(({k: v.clone() for k, v in trainer.model.state_dict().items()}, step,
                          [dict(h) for h in trainer.state.history]))


def test_best_checkpoint_holds_the_state_of_the_best_validation_epoch(tmp_path):
    """best.ckpt is the whole training state at the epoch of the lowest validation loss (its
    weights, optimizer state, counters and history up to then), written with a later last.ckpt."""
    rec = _EveryEpoch()
    run = nnfin.fit(overrides=["train.epochs=23", "data.n=300", "run.checkpoint_every=4",
                               "optim.lr=0.05", "run.plots=false"], run_dir=tmp_path / "r",
                    callbacks=[rec])
    val = [h["val_loss"] for h in run.history.to_dict("records")]
    best_epoch = min(range(len(val)), key=val.__getitem__) + 1
    # the best state written is the one pending at the last write (epoch 23, the end)
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.ckpt")
    weights_then, step_then, history_then = rec.seen[best_epoch - 1]
    assert best["train_state"]["epoch"] == best_epoch
    assert best["train_state"]["history"] == history_then
    assert len(history_then) == best_epoch
    for k, v in weights_then.items():
        assert torch.equal(best["model"][k], v)
    assert torch.equal(next(iter(best["optimizer"]["state"].values()))["step"], step_then)
    assert best["callbacks"]["CheckpointCallback#0"]["best"] == pytest.approx(val[best_epoch - 1])
