"""``[train] threads``: one thread for small steps, the free cores for large ones, restored after."""

from __future__ import annotations

import pytest
import torch

import nnfin
from nnfin import device as dev
from nnfin.config import load_config
from nnfin.errors import ConfigError
from nnfin.train.loop import Callback

CPU = torch.device("cpu")


def test_auto_gives_small_steps_one_thread_and_large_ones_the_free_cores(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert dev.training_threads("auto", work=dev.SMALL_STEP - 1, device=CPU) == 1
    assert dev.training_threads("auto", work=dev.SMALL_STEP, device=CPU) == 8
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (2.6, 0.0, 0.0))  # 3 cores busy
    assert dev.training_threads("auto", work=1e12, device=CPU) == 5
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert dev.training_threads("auto", work=1e12, device=CPU) == 1
    assert dev.training_threads(3, work=1.0, device=CPU) == 3
    assert dev.training_threads("auto", work=1.0, device=torch.device("meta")) is None


class Threads(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, logs):
        self.seen.append(torch.get_num_threads())


@pytest.mark.parametrize("setting, expected", [("auto", 1), (2, 2)])
def test_the_loop_trains_with_its_threads_and_restores_the_callers(setting, expected):
    before = torch.get_num_threads()
    cb = Threads()
    try:
        torch.set_num_threads(3)
        nnfin.fit({"data": {"n": 100}, "train": {"epochs": 2, "progress": False,
                                                  "threads": setting, "device": "cpu"}},
                  write=False, callbacks=[cb])
        assert cb.seen == [expected, expected]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_stack_trains_with_one_thread_for_small_networks():
    from nnfin.data import build_data
    from nnfin.models import build_model
    from nnfin.train.stack.engine import Job, train_group

    before = torch.get_num_threads()
    cfg = load_config(None, ["train.epochs=2", "data.n=200", "train.device=cpu",
                             "train.progress=false"])
    data = build_data(cfg.data)
    cb = Threads()
    try:
        torch.set_num_threads(2)
        train_group([Job(cfg, data, build_model(cfg.model, in_dim=1, out_dim=1))] * 2,
                    callbacks=[cb])
        assert set(cb.seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "2000", "true", "'two'", "1.5"])
def test_bad_thread_counts_are_refused_naming_the_field(value):
    with pytest.raises(ConfigError, match="threads"):
        load_config(None, [f"train.threads={value}"])


def test_bad_thread_count_on_the_command_line(cli, tmp_path):
    from conftest import assert_one_line_error

    res = cli("fit", "--set", "train.threads=0", "-o", str(tmp_path / "r"))
    assert_one_line_error(res, "threads")
    assert not (tmp_path / "r").exists()


def _policy(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_import_nnfin_makes_openmp_threads_sleep_unless_the_user_chose():
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _policy("import nnfin; " + show) == "PASSIVE"
    assert _policy("import nnfin; " + show, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    # torch already loaded its OpenMP library: too late to choose, so nothing is set
    assert _policy("import torch, nnfin; " + show) == "None"
