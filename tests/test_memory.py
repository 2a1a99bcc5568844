"""Sizes that cannot fit in memory are refused in one line, before anything is allocated or written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin import memory
from nnfin.app import report as report_mod
from nnfin.config import DataConfig, ModelConfig, load_config
from nnfin.data import build_data
from nnfin.data import check_memory as data_memory
from nnfin.errors import ConfigError
from nnfin.finance.datasets import check_memory as generation_memory
from nnfin.finance.datasets import generate
from nnfin.finance.heston import heston_cos_price
from nnfin.models import build_model
from nnfin.models import check_memory as model_memory

BIG = "1000000000000"
RECIPES = sorted((Path(__file__).parent.parent / "examples" / "finance").glob("*.toml"))
GiB = 2**30


@pytest.fixture
def small_machine(monkeypatch):
    """16 GiB free, whatever this machine has: refusals do not depend on the host."""
    monkeypatch.setattr(memory, "available", lambda device=None: 16 * GiB)


def _no_outputs(folder) -> None:
    runs = folder / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))


# ------------------------------------------------------------------------------ nnfin data


@pytest.mark.parametrize("n", [BIG, "1e12"])
def test_data_command_refuses_rows_that_cannot_fit(cli, tmp_path, small_machine, n):
    out = tmp_path / "x.parquet"
    result = cli("data", "black-scholes", "--n", n, "--out", str(out))
    assert_one_line_error(result, f"--n = {BIG}", "the data need", "TiB", "16 GiB of memory available")
    assert not out.exists()


def test_data_command_refuses_cos_terms_that_cannot_fit(cli, tmp_path, small_machine):
    out = tmp_path / "h.parquet"
    result = cli("data", "heston", "--n", "10", "--cos-n", BIG, "--out", str(out))
    assert_one_line_error(result, f"--cos-n = {BIG}", "the COS terms need", "terms x 400 bytes")
    assert not out.exists()


def test_data_command_writes_a_size_at_the_boundary(cli, tmp_path, monkeypatch):
    n = 300_000  # 300,000 rows x 256 bytes = 73 MiB: above the always-fits floor
    need = generation_memory("black-scholes", n)
    assert need > memory.ALWAYS_FITS
    monkeypatch.setattr(memory, "available", lambda device=None: need)
    out = tmp_path / "ok.parquet"
    assert cli("data", "black-scholes", "--n", "3e5", "--out", str(out)).code == 0
    assert out.exists()
    monkeypatch.setattr(memory, "available", lambda device=None: need - 1)
    out2 = tmp_path / "too-big.parquet"
    assert_one_line_error(cli("data", "black-scholes", "--n", str(n), "--out", str(out2)), "--n = 300000")
    assert not out2.exists()


# ------------------------------------------------------------------- fit and its siblings


@pytest.mark.parametrize(("setting", "fragment"), [
    ("data.n=1e12", f"[data] n = {BIG}: the data need"),
    (f"data.n={BIG}", f"[data] n = {BIG}: the data need"),
    ("model.neurons=[1000000000]", "[model] neurons = [1000000000]: the model needs"),
    ("model.neurons=[100000, 100000]", "[model] neurons = [100000, 100000]: the model needs"),
])
def test_fit_refuses_sizes_that_cannot_fit(cli, tmp_path, monkeypatch, small_machine, setting, fragment):
    monkeypatch.chdir(tmp_path)
    result = cli("fit", "--set", setting, "--set", "train.progress=false", "--set", "train.device=cpu")
    assert_one_line_error(result, fragment, "16 GiB of memory available")
    _no_outputs(tmp_path)


def test_fit_refuses_finance_data_and_cos_terms(cli, tmp_path, monkeypatch, small_machine):
    monkeypatch.chdir(tmp_path)
    base = ["--set", "train.progress=false", "--set", "train.device=cpu"]
    assert_one_line_error(cli("fit", "--set", "data.kind=heston", "--set", "data.n=1e12", *base),
                          f"[data] n = {BIG}", "COS work")
    assert_one_line_error(cli("fit", "--set", "data.kind=heston", "--set", "data.n=100",
                              "--set", f"data.options={{N = {BIG}}}", *base), f"[data.options] N = {BIG}")
    assert_one_line_error(cli("fit", "--set", "data.kind=black-scholes", "--set", "data.n=1e11",
                              "--set", "data.options={greeks = true}", *base),
                          "[data] n = 100000000000", "10 float64 columns")
    _no_outputs(tmp_path)


@pytest.mark.parametrize("command", ["lr-find", "cv"])
@pytest.mark.parametrize("setting", ["data.n=1e12", "model.neurons=[100000, 100000]"])
def test_lr_find_and_cv_refuse_sizes_that_cannot_fit(cli, tmp_path, monkeypatch, small_machine,
                                                    command, setting):
    monkeypatch.chdir(tmp_path)
    result = cli(command, "--set", setting, "--set", "train.progress=false", "--set", "train.device=cpu")
    field = "[data] n" if setting.startswith("data") else "[model] neurons"
    assert_one_line_error(result, field, "of memory available")


def test_tune_refuses_a_candidate_that_cannot_fit(cli, tmp_path, monkeypatch, small_machine):
    monkeypatch.chdir(tmp_path)
    result = cli("tune", "--set", 'tune.space={"model.width" = [100000000]}', *[
        a for s in FAST for a in ("--set", s)])
    assert_one_line_error(result, "[model] neurons = [100000000, 100000000]", "the model needs")


def test_huge_batch_size_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("fit", "--set", f"train.batch_size={BIG}", "--set", "train.progress=false")
    assert_one_line_error(result, f"batch_size = {BIG}")


# ------------------------------------------------------------------------------ nnfin report


@pytest.fixture(scope="module")
def bs_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory") / "bs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(report_mod.DEFAULTS, "n", 200)
        return nnfin.fit(overrides=["data.kind=black-scholes", "data.n=300", "train.epochs=1",
                                    "train.progress=false", "train.device=cpu", "model.neurons=[8]",
                                    f"run.dir={folder}", "run.plots=false"])


@pytest.mark.parametrize("n", ["1e12", BIG])
def test_report_refuses_test_sets_that_cannot_fit(cli, tmp_path, small_machine, bs_run, n):
    before = {p.name: p.stat().st_mtime_ns for p in (bs_run.dir / "report").iterdir()}
    out = tmp_path / "rep"
    assert_one_line_error(cli("report", str(bs_run.dir), "--n", n, "--out", str(out)),
                          f"--n = {BIG}", "of memory available")
    assert not out.exists()
    assert_one_line_error(cli("report", str(bs_run.dir), "--n", n), f"--n = {BIG}")
    assert {p.name: p.stat().st_mtime_ns for p in (bs_run.dir / "report").iterdir()} == before


def test_report_check_counts_the_forward_pass_and_the_iv_options(small_machine):
    cfg = load_config(None, ["data.kind=implied-vol", "model.neurons=[100000, 100000]"])
    run = SimpleNamespace(config=cfg, dir=None, features=["moneyness", "tau", "r", "log_time_value"],
                          targets=["sigma"])
    with pytest.raises(ConfigError, match=r"^n = 100000: the test sets need .*forward pass"):
        report_mod.check_memory(run, n=100_000, iv_n=10)
    with pytest.raises(ConfigError, match=r"^--iv-n = 100000: the implied-vol comparison needs"):
        report_mod.check_memory(run, n=10, iv_n=100_000, fields=("--n", "--iv-n"))
    with pytest.raises(ConfigError, match=r"^n = 100000"):  # evaluate checks before generating
        report_mod.evaluate(run, n=100_000, train=False)


# ---------------------------------------------------------------- the build points (API)


def test_build_data_boundary_is_the_estimate(monkeypatch):
    cfg = DataConfig(kind="cos", n=1_000_000)
    need = data_memory(cfg)
    assert need == 1_000_000 * 80 > memory.ALWAYS_FITS
    monkeypatch.setattr(memory, "available", lambda device=None: need)
    assert build_data(cfg).x_train.shape[0] == 700_000
    monkeypatch.setattr(memory, "available", lambda device=None: need - 1)
    with pytest.raises(ConfigError, match=r"^\[data\] n = 1000000: the data need ~76.3 MiB "):
        build_data(cfg)


def test_data_on_a_cuda_device_is_checked_against_its_memory(monkeypatch):
    seen = []

    def fake(device=None):
        seen.append(device)
        return 20 * GiB if device is None else GiB
    monkeypatch.setattr(memory, "available", fake)
    with pytest.raises(ConfigError, match=r"of memory available on cuda:0$"):
        data_memory(DataConfig(kind="cos", n=100_000_000), device="cuda:0")
    assert seen == [None, "cuda:0"]


def test_build_model_boundary_is_the_estimate(monkeypatch):
    cfg = ModelConfig(neurons=[2000, 2000])
    need = model_memory(cfg, in_dim=4, out_dim=1)
    assert need == (5 * 2000 + 2001 * 2000 + 2001) * 4 * 4 + 64 * 4005 * 4 * 3
    monkeypatch.setattr(memory, "available", lambda device=None: need)
    build_model(cfg, in_dim=4, out_dim=1)
    monkeypatch.setattr(memory, "available", lambda device=None: need - 1)
    with pytest.raises(ConfigError, match=r"^\[model\] neurons = \[2000, 2000\]: the model needs ~64.2 MiB "
                                          r"\(4.01e\+06 parameters x 4 bytes x 4 "):
        build_model(cfg, in_dim=4, out_dim=1)


def test_generators_check_their_own_sizes(small_machine):
    with pytest.raises(ConfigError, match=rf"^n = {BIG}: the data need"):
        generate("implied-vol", n=10**12)
    with pytest.raises(ConfigError, match=r"^chunk = 10000000: the COS terms need"):
        generation_memory("heston", 10**7, {"chunk": 10**7})
    with pytest.raises(ConfigError, match=rf"^n_terms = {BIG}: the COS terms need"):
        heston_cos_price(1.0, 1.0, 0.0, rho=-0.5, kappa=1.0, vbar=0.04, gamma=0.3, v0=0.04,
                         n_terms=10**12)
    from nnfin.data.functions import sample_function

    with pytest.raises(ConfigError, match=rf"^\[data\] n = {BIG}: the data need"):
        sample_function("cos", n=10**12)


def test_everyday_sizes_never_read_the_memory(monkeypatch, fast):
    def boom(device=None):
        raise AssertionError("available() read for an everyday size")
    monkeypatch.setattr(memory, "available", boom)
    run = nnfin.fit(overrides=fast, write=False)
    assert run.model is not None
    for f in RECIPES:
        cfg = load_config(f)
        assert model_memory(cfg.model, in_dim=8, out_dim=1) < memory.ALWAYS_FITS


def test_shipped_recipes_with_a_million_rows_fit_a_24_gib_machine(monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device=None: 20 * GiB)  # 24 GiB, some in use
    assert RECIPES
    for f in RECIPES:
        cfg = load_config(f, ["data.n=1000000"])
        assert data_memory(cfg.data, dtype=cfg.train.dtype) < 2 * GiB, f
        model_memory(cfg.model, in_dim=8, out_dim=1, rows=cfg.train.batch_size)


# ------------------------------------------------------------------------------- helpers


def test_helpers():
    assert memory.format_bytes(56 * 2**40) == "56 TiB"
    assert memory.format_bytes(21.3 * GiB) == "21.3 GiB"
    assert memory.parse_count("1e12") == 10**12 and memory.parse_count("2_000") == 2000
    for bad in ("1.5", "x", "inf", "nan"):
        with pytest.raises(ValueError, match="not a whole number"):
            memory.parse_count(bad)
    with pytest.raises(ValueError, match=">= 1"):
        memory.parse_count("0", minimum=1)
    free = memory.available()
    assert free is None or free > 0
    assert memory.available("cuda:99") is None  # no such device: nothing to compare with
    memory.require("n", 1, 10**30, "the data", device="cuda:99")  # unknown free memory: no refusal
