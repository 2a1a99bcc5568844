"""Hostile inputs to the figures' layout, the NumPy metrics and the fused Adam/AdamW step."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from nnfin import plots
from nnfin.metrics import regression_metrics
from nnfin.train import optim
from test_figures_layout import assert_laid_out


@pytest.mark.parametrize("outputs", [1, 2])
def test_non_finite_predictions_of_constant_targets_give_non_finite_r2(outputs):
    """A constant target scores 1 or 0 only for finite predictions; NaN or inf predictions
    give a non-finite R² there too, as on any other target."""
    y = np.column_stack([np.full(5, 2.0), np.arange(5.0)])[:, :outputs]
    p = y.copy()
    p[1, 0] = np.nan
    assert math.isnan(regression_metrics(y, p)["r2"])
    p[1, 0] = np.inf
    assert regression_metrics(y, p)["r2"] == -math.inf
    p[1, 0] = 2.5  # finite: scikit-learn's 0 for a constant target predicted wrongly
    assert math.isfinite(regression_metrics(y, p)["r2"])


@pytest.mark.parametrize("maker", ["fit", "params"])
def test_a_long_label_that_fits_the_figure_is_not_cut_off(maker):
    """An axis label longer than its panel but shorter than the figure stays inside it."""
    import pandas as pd

    from nnfin.tune.report import params_figure

    name = "n" * 60
    rng = np.random.default_rng(0)
    if maker == "fit":
        x = rng.uniform(-1, 1, (50, 1))
        fig = plots.fit_figure(x, x, lambda g: g, feature=name, target="y")
    else:
        df = pd.DataFrame({"trial": range(5), "state": ["COMPLETE"] * 5,
                           "mean": 10 ** rng.uniform(-4, -1, 5),
                           name: rng.uniform(0, 1, 5), "b": rng.uniform(0, 1, 5)})
        fig = params_figure(df, [name, "b"], "val_mse", set())
    try:
        assert_laid_out(fig, maker)
    finally:
        plt.close(fig)


def _train(cls, *, decoupled_extra: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    params = list(model.parameters())
    opt = cls(params[:2], lr=1e-2, weight_decay=0.05, fused=True)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, generator=g), torch.randn(64, 1, generator=g)
    for i in range(20):
        if i == 5:  # a group added mid-training with its own kind of weight decay
            opt.add_param_group({"params": params[2:], "weight_decay": 0.1,
                                 "decoupled_weight_decay": decoupled_extra})
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_step_takes_each_groups_own_decoupled_weight_decay(name):
    """Bit for bit as torch.optim's fused step, whose weight decay is decoupled or not per group."""
    ours, theirs = {"adam": (optim.Adam, torch.optim.Adam),
                    "adamw": (optim.AdamW, torch.optim.AdamW)}[name]
    extra = name == "adam"  # the other kind than the optimizer's own
    for a, b in zip(_train(ours, decoupled_extra=extra), _train(theirs, decoupled_extra=extra),
                    strict=True):
        assert torch.equal(a, b)
