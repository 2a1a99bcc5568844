"""The hedging test of the finance report: a short book of calls delta-hedged along GBM paths with
the network's delta and with the exact delta (nnfin.finance.hedging), in evaluate, files and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from conftest import assert_one_line_error
from nnfin.app import report as report_mod
from nnfin.app.report import HEDGE, evaluate
from nnfin.config import load_config
from nnfin.data.scaling import Standardizer
from nnfin.runs import Run
from test_finance_report import ExactBlackScholes

BS = ["data.kind=black-scholes", "data.n=400", "train.epochs=3", "train.batch_size=64",
      "train.progress=false", "train.device=cpu", "model.neurons=[8]", "model.activation=tanh"]
FEATURES = ["moneyness", "tau", "r", "sigma"]


def exact_run() -> Run:
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    scaler = Standardizer(t(1.0, 0.6, 0.05, 0.5), t(0.3, 0.25, 0.02, 0.3), t(0.2), t(0.15))
    return Run(load_config(None, ["data.kind=black-scholes"]), ExactBlackScholes(scaler), scaler,
               FEATURES, ["price"])


def test_an_exact_delta_network_hedges_exactly_as_the_closed_form():
    rep = evaluate(exact_run(), n=50, train=False, hedge_paths=500)
    h = rep.hedging.set_index("hedge")
    assert list(h.index) == ["exact delta", "network delta", "no hedge"]
    np.testing.assert_allclose(rep.hedge_pnls["network delta"], rep.hedge_pnls["exact delta"],
                               rtol=0, atol=1e-10)
    assert h.loc["network delta", "std_ratio"] == pytest.approx(1.0, abs=1e-8)
    assert h.loc["no hedge", "std"] > 10 * h.loc["exact delta", "std"]
    assert h["paths"].eq(500).all()
    assert rep.settings["hedging"]["steps"] == HEDGE["steps"] == 126  # daily over half a year
    assert any(note.startswith("hedging: short 3 calls") for note in rep.notes)


def test_a_poor_network_hedges_worse_and_the_ratio_says_so():
    run = nnfin.fit(overrides=BS, write=False)
    rep = evaluate(run, n=50, train=False, hedge_paths=300, hedge_seed=3)
    h = rep.hedging.set_index("hedge")
    assert h.loc["network delta", "std_ratio"] > 1.5
    assert h.loc["exact delta", "std_ratio"] == 1.0
    again = evaluate(run, n=50, train=False, hedge_paths=300, hedge_seed=3)
    pd.testing.assert_frame_equal(again.hedging, rep.hedging)  # seeded
    assert evaluate(run, n=50, train=False, hedge=False).hedging is None


def test_implied_vol_runs_have_no_hedging_test():
    feats = ["moneyness", "tau", "r", "log_time_value"]
    run = Run(load_config(None, ["data.kind=implied-vol"]), nn.Linear(4, 1).double(), None, feats,
              ["sigma"])
    rep = evaluate(run, n=50, train=False, iv=False)
    assert rep.hedging is None and not rep.hedge_pnls


def test_report_command_writes_and_prints_the_hedging_table(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(report_mod.DEFAULTS, "n", 200)
    monkeypatch.setitem(report_mod.DEFAULTS, "hedge_paths", 200)
    run = nnfin.fit(overrides=[*BS, f"run.dir={tmp_path / 'bs'}"])
    assert (run.dir / "report" / "hedging.csv").exists()  # written by the fit
    result = cli("report", str(run.dir), "--n", "200", "--hedge-paths", "300", "--no-train")
    assert result.code == 0, result
    assert "delta hedging" in result.out and "network delta" in result.out
    table = pd.read_csv(run.dir / "report" / "hedging.csv")
    assert table["hedge"].tolist() == ["exact delta", "network delta", "no hedge"]
    assert table["paths"].eq(300).all()
    assert (run.dir / "report" / "hedging.png").stat().st_size > 0
    summary = json.loads((run.dir / "report" / "report.json").read_text())
    assert [r["hedge"] for r in summary["hedging"]] == table["hedge"].tolist()
    assert summary["settings"]["hedging"]["paths"] == 300
    out = tmp_path / "no-hedge"
    result = cli("report", str(run.dir), "--n", "200", "--no-hedge", "--no-train", "-o", str(out))
    assert result.code == 0, result
    assert not (out / "hedging.csv").exists() and "delta hedging" not in result.out


@pytest.mark.parametrize(("value", "fragment"), [("0", "--hedge-paths"), ("1e13", "--hedge-paths")])
def test_bad_hedge_paths_are_one_line(tmp_path, cli, monkeypatch, value, fragment):
    monkeypatch.setitem(report_mod.DEFAULTS, "n", 100)
    monkeypatch.setitem(report_mod.DEFAULTS, "hedge_paths", 100)
    run = nnfin.fit(overrides=[*BS, f"run.dir={tmp_path / 'bs'}", "run.plots=false"])
    assert_one_line_error(cli("report", str(run.dir), "--hedge-paths", value), fragment)
