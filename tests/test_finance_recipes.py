"""The training recipes in examples/finance: the paper's network, the hedging recipe, and tiny
end-to-end runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from nnfin.app import report as report_mod
from nnfin.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "finance"
NAMES = ("bs_price", "bs_price_paper", "bs_price_differential", "implied_vol", "heston")
PAPER = ("bs_price_paper", "bs_price_differential", "implied_vol")
TINY = ["data.n=400", "train.epochs=2", "model.neurons=[16, 16]", "train.batch_size=64",
        "train.progress=false", "train.device=cpu"]
EXTRA = {"heston": ["data.n=200", "data.options.N=64", "data.options.L=12"]}


@pytest.mark.parametrize("name", PAPER)
def test_recipe_is_the_papers_network(name):
    cfg = load_config(RECIPES / f"{name}.toml")
    assert cfg.model.kind == "mlp" and cfg.model.neurons == [400, 400, 400, 400]
    assert (cfg.model.activation, cfg.model.init) == ("relu", "xavier")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule, cfg.optim.min_lr) == \
        ("adam", 1e-3, "cosine", 1e-5)
    assert (cfg.train.batch_size, cfg.train.loss) == (1024, "mse")
    assert cfg.data.n * cfg.train.epochs <= 30_000_000  # CPU-sized by default
    text = (RECIPES / f"{name}.toml").read_text()
    assert "--set data.n=1000000 --set train.epochs=3000" in text  # the paper-scale line
    paper = load_config(RECIPES / f"{name}.toml", ["data.n=1000000", "train.epochs=3000"])
    assert paper.data.n == 1_000_000 and paper.train.epochs == 3000


def test_the_black_scholes_recipe_trains_a_smooth_network_on_prices_and_greeks():
    """bs_price.toml: differential training, a smooth activation (a real gamma), CPU-sized."""
    cfg = load_config(RECIPES / "bs_price.toml")
    assert cfg.model.activation in ("silu", "softplus", "gelu", "elu", "tanh", "sigmoid")
    assert cfg.data.options["greeks"] is True and cfg.train.derivative_weight > 0
    assert cfg.data.derivatives == {"moneyness": "delta", "tau": "-theta", "r": "rho", "sigma": "vega"}
    assert cfg.data.options["ranges"] == "wide" and cfg.data.n * cfg.train.epochs <= 30_000_000
    assert "--set data.n=1000000" in (RECIPES / "bs_price.toml").read_text()


def test_the_heston_recipe_trains_a_small_smooth_network_on_prices_and_their_derivatives():
    """heston.toml: differential training on the exact COS derivatives in all 8 inputs."""
    from nnfin.finance.datasets import FEATURES

    cfg = load_config(RECIPES / "heston.toml")
    assert cfg.data.kind == "heston" and cfg.data.options["greeks"] is True
    assert cfg.data.derivatives == {f: f"dV_d{f}" for f in FEATURES["heston"]}
    assert cfg.train.derivative_weight > 0 and cfg.model.activation == "silu"
    assert (cfg.data.options["N"], cfg.data.options["L"], cfg.data.options["ranges"]) == (1500, 50, "wide")
    text = (RECIPES / "heston.toml").read_text()
    assert "--set data.n=1000000 --set train.epochs=3000" in text  # the paper-scale line
    paper = load_config(RECIPES / "heston.toml", [
        "model.neurons=[400,400,400,400]", "model.activation=relu", "data.derivatives={}",
        "data.options.greeks=false", "train.batch_size=1024", "data.n=1000000", "train.epochs=3000"])
    assert paper.data.derivatives == {} and paper.model.neurons == [400] * 4


@pytest.mark.parametrize("name", ["bs_price", "bs_price_differential"])
def test_differential_recipe_trains_on_the_greeks(name):
    raw = tomllib.loads((RECIPES / f"{name}.toml").read_text())
    assert raw["data"]["options"]["greeks"] is True
    assert raw["data"]["derivatives"] == {"moneyness": "delta", "tau": "-theta", "r": "rho",
                                          "sigma": "vega"}
    assert raw["train"]["derivative_weight"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_tiny_recipe_runs_end_to_end_with_its_report(name, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(report_mod.DEFAULTS, "n", 400)
    monkeypatch.setitem(report_mod.DEFAULTS, "iv_n", 200)
    monkeypatch.setitem(report_mod.HEDGE_PATHS, "heston", 40)
    sets = [arg for o in [*TINY, *EXTRA.get(name, [])] for arg in ("--set", o)]
    out = tmp_path / name
    result = cli("fit", str(RECIPES / f"{name}.toml"), *sets, "-o", str(out), "-q")
    assert result.code == 0, result
    files = {p.name for p in (out / "report").iterdir()}
    assert {"metrics.csv", "report.json", "error_surface.png"} <= files
    assert ("greeks.png" in files) == name.startswith("bs_price")
    hedged = name.startswith("bs_price") or name == "heston"
    assert ("hedging.csv" in files) == ("hedging.png" in files) == hedged
    assert ("iv_solvers.csv" in files) == (name == "implied_vol")
    table = pd.read_csv(out / "report" / "metrics.csv")
    splits = {"train", "test-wide"} | ({"test-narrow"} if name != "heston" else set())
    assert set(table["split"]) == splits
    assert table[["mse", "rmse", "mae", "r2", "max_abs_error"]].notna().all().all()
    if name == "implied_vol":
        iv = pd.read_csv(out / "report" / "iv_solvers.csv").set_index("method")
        assert iv.loc["newton (vectorised)", "mae"] < 1e-10 and iv["n"].eq(200).all()

