"""Data-parallel training under torchrun (2 CPU processes, gloo) equals one process."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import nnfin

CONFIG = """
[data]
n = 1000
split = [0.64, 0.36, 0.0]   # 640 training rows: 10 batches of 64, 32 rows per rank
[train]
epochs = 4
batch_size = 64
device = "cpu"
dtype = "float64"
progress = false
[run]
plots = false
"""


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(29500 + os.getpid() % 1000), "-m", "nnfin", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def assert_close_weights(a, b) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-10, atol=1e-12)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    done = torchrun("fit", str(cfg), "--distributed", "-q", "-o", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports and writes
    nnfin.fit(cfg, overrides=[f"run.dir={tmp_path / 'single'}"])
    assert_close_weights(tmp_path / "ddp", tmp_path / "single")
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").exists()

    # resume under torchrun extends the run exactly like a single-process run of 6 epochs
    done = torchrun("resume", str(tmp_path / "ddp"), "--distributed", "-q", "--epochs", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    nnfin.fit(cfg, overrides=[f"run.dir={tmp_path / 'single6'}", "train.epochs=6"])
    assert_close_weights(tmp_path / "ddp", tmp_path / "single6")


def test_distributed_without_torchrun_is_a_one_line_error(cli, tmp_path, monkeypatch):
    from conftest import assert_one_line_error

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    res = cli("fit", "--distributed", "-q", "-o", str(tmp_path / "r"))
    assert_one_line_error(res, "torchrun")


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile missing")
def test_compile_flag_trains_the_same_function():
    base = ["train.epochs=2", "data.n=200", "train.device=cpu", "train.progress=false",
            "train.dtype=float64"]
    try:
        compiled = nnfin.fit(overrides=[*base, "train.compile=true"], write=False)
    except Exception as exc:  # no working C++ toolchain for inductor here
        pytest.skip(f"torch.compile unavailable: {type(exc).__name__}")
    eager = nnfin.fit(overrides=base, write=False)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
