"""Every figure nnfin saves is laid out: after drawing, every visible text lies inside the figure,
no panel's text runs into another panel or another panel's text, tick labels of one axis do not
overlap, and saving draws the figure once.

The figures come from the figure makers themselves (loss, fit, tune history and parameters,
Optuna's plots as the tune report lays them out, the learning-rate range test, the runs
comparison, the finance report), on small inputs built here.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from nnfin import plots

SHRINK = 0.5  # pixels taken off every box before the overlap tests: touching is not overlapping


def _shrunk(box: Bbox) -> Bbox:
    return Bbox.from_extents(box.x0 + SHRINK, box.y0 + SHRINK, box.x1 - SHRINK, box.y1 - SHRINK)


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _drawn_tick_labels(axis) -> list[Text]:
    """The tick labels matplotlib draws: those of ticks inside the view (``_update_ticks`` is
    the list the axis draws)."""
    labels = []
    for tick in axis._update_ticks():
        labels += [t for t in (tick.label1, tick.label2) if _shown(t)]
    return labels


def _texts(fig: Figure, renderer) -> dict[object, list[tuple[str, Bbox]]]:
    """Per panel (the figure itself: ``None``) the boxes of its visible texts, named."""
    out: dict[object, list[tuple[str, Bbox]]] = {None: []}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        items = out.setdefault(ax, [])
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            items += [(f"tick label {t.get_text()!r}", t.get_window_extent(renderer))
                      for t in _drawn_tick_labels(axis)]
            for t in (axis.label, axis.offsetText):
                if _shown(t):
                    items.append((f"label {t.get_text()!r}", t.get_window_extent(renderer)))
        for child in ax.get_children():
            if isinstance(child, Text) and _shown(child):
                items.append((f"text {child.get_text()!r}", child.get_window_extent(renderer)))
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            items.append(("legend", legend.get_window_extent(renderer)))
    out[None] += [(f"figure text {t.get_text()!r}", t.get_window_extent(renderer))
                  for t in fig.texts if _shown(t)]
    return out


def assert_laid_out(fig: Figure, what: str) -> None:
    """The layout properties of ``fig`` (drawn here first)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    texts = _texts(fig, renderer)
    panels = [ax for ax in texts if ax is not None]
    for owner, items in texts.items():
        for name, box in items:  # inside the figure
            assert (box.x0 >= frame.x0 - SHRINK and box.y0 >= frame.y0 - SHRINK
                    and box.x1 <= frame.x1 + SHRINK and box.y1 <= frame.y1 + SHRINK), \
                f"{what}: {name} {box.extents.round(1)} outside the figure {frame.extents}"
        for other in panels:  # not into another panel
            if other is owner:
                continue
            area = _shrunk(other.bbox)
            for name, box in items:
                assert not _shrunk(box).overlaps(area), \
                    f"{what}: {name} overlaps the panel {other.get_label() or other}"
    for (a, items_a), (b, items_b) in itertools.combinations(texts.items(), 2):
        for (name_a, box_a), (name_b, box_b) in itertools.product(items_a, items_b):
            assert not _shrunk(box_a).overlaps(_shrunk(box_b)), \
                f"{what}: {name_a} (panel {a}) overlaps {name_b} (panel {b})"
    for ax in panels:  # tick labels of one axis side by side
        for axis in (ax.xaxis, ax.yaxis):
            labels = _drawn_tick_labels(axis) if axis.get_visible() else []
            boxes = [(t.get_text(), _shrunk(t.get_window_extent(renderer))) for t in labels]
            for (ta, ba), (tb, bb) in itertools.combinations(boxes, 2):
                assert not ba.overlaps(bb), f"{what}: tick labels {ta!r} and {tb!r} overlap"


# --------------------------------------------------------------------------- the figures


def _history(epochs: int = 200, low: float = 1e-3) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    train = np.geomspace(1.0, low, epochs)
    return pd.DataFrame({"epoch": e, "train_loss": train, "val_loss": 1.3 * train})


def _ranking() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    neurons = ["[6, 6]", "[16, 16]", "[32, 32, 32]", "[64, 64, 64]", "[128, 128, 128]"]
    return pd.DataFrame({"trial": range(n), "state": ["COMPLETE"] * (n - 2) + ["PRUNED"] * 2,
                         "mean": 10 ** rng.uniform(-4, -1, n),
                         "optim.lr": 10 ** rng.uniform(-4, -1, n),
                         "train.batch_size": rng.choice([16, 32, 64, 128], n),
                         "model.neurons": rng.choice(neurons, n),
                         "optim.name": rng.choice(["adam", "sgd", "rmsprop"], n)})


def _study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = ["[6, 6]", "[16, 16]", "[32, 32, 32]"]

    def objective(trial):
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        bs = trial.suggest_int("train.batch_size", 16, 128, step=16)
        neurons = trial.suggest_categorical("model.neurons", space)
        return lr * 10 + bs / 1e3 + space.index(neurons) / 10

    study.optimize(objective, n_trials=10)
    return study


def _optuna_figures(monkeypatch) -> dict[str, Figure]:
    """The figures ``optuna_plots`` saves, caught before saving."""
    from nnfin.tune.report import optuna_plots

    caught: dict[str, Figure] = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, **_: caught.setdefault(path.name, fig))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notes = optuna_plots(_study(), Path("plots"), "val_mse")  # the folder is only used by save
    assert notes == []
    return caught


def _figures(monkeypatch) -> dict[str, Figure]:
    from nnfin.app.lr_find import LRFindResult
    from nnfin.app.lr_find import figure as lr_figure
    from nnfin.app.runs_table import compare_figure
    from nnfin.finance.report_plots import error_surface_figure, hedging_figure
    from nnfin.tune.report import history_figure, params_figure

    rng = np.random.default_rng(1)
    x1 = rng.uniform(-2, 4, (300, 1))
    x3 = rng.uniform(0, 1, (300, 3))
    ranked = _ranking()
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 1 / (1 + lrs * 1e3) + 0.01
    xs = rng.uniform([0.5, 0.05], [1.5, 2.0], (400, 2))
    figs = {
        "loss, four decades": plots.loss_figure(_history(), "a-rather-long-run-name-20240101-120000"),
        "loss, half a decade": plots.loss_figure(_history(low=0.3)),
        "fit, one input": plots.fit_figure(x1, np.cos(x1), np.cos, feature="moneyness",
                                           target="price", x_test=x1[:50], y_test=np.cos(x1[:50])),
        "fit, three inputs": plots.fit_figure(x3, x3.sum(1, keepdims=True) * 1e-5,
                                              lambda x: x.sum(1, keepdims=True) * 1e-5, target="price"),
        "tune history": history_figure(ranked, "val_mse"),
        "tune params, three": params_figure(ranked, ["optim.lr", "train.batch_size", "model.neurons"],
                                            "val_mse", {"optim.lr"}, categorical={"model.neurons"}),
        "tune params, four in two rows": params_figure(
            ranked, ["optim.lr", "train.batch_size", "model.neurons", "optim.name"], "val_r2",
            {"optim.lr"}, categorical={"model.neurons", "optim.name"}),
        "lr_find": lr_figure(LRFindResult(lrs=lrs, losses=losses, smoothed=losses, suggestion=1e-4,
                                          min_div_10=1e-3, stop_reason="end")),
        "runs compare": compare_figure([_history(), _history(300, 1e-4)], ["run-1", "run-2"]),
        "error surface": error_surface_figure(
            {"test-wide": {"x": xs, "y": xs[:, 0], "pred": xs[:, 0] + rng.normal(0, 1e-3, 400)},
             "test-narrow": {"x": xs, "y": xs[:, 0], "pred": xs[:, 0] + rng.normal(0, 1e-5, 400)}},
            ["moneyness", "tau"], "price"),
        "hedging": hedging_figure({"no hedge": rng.normal(0, 0.1, 500),
                                   "exact delta": rng.normal(0, 1e-2, 500),
                                   "network delta": rng.normal(0, 1.1e-2, 500)}),
    }
    figs.update(_optuna_figures(monkeypatch))
    return figs


def test_every_figure_is_laid_out(monkeypatch) -> None:
    figs = _figures(monkeypatch)
    assert {"optuna_history.png", "optuna_slice.png", "optuna_importances.png"} <= set(figs)
    try:
        for what, fig in figs.items():
            assert fig.get_layout_engine() is None, what  # saving does not lay it out again
            assert_laid_out(fig, what)
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_greeks_figure_is_laid_out() -> None:
    """The finance report's Greeks: two rows of panels, titles over every panel, offset texts."""
    import torch

    from nnfin.app.report import evaluate
    from nnfin.config import load_config
    from nnfin.data.scaling import Standardizer
    from nnfin.finance.report_plots import greeks_figure
    from nnfin.runs import Run
    from test_finance_report import ExactBlackScholes

    f64 = torch.float64
    scaler = Standardizer(torch.tensor([1.0, 0.6, 0.05, 0.5], dtype=f64),
                          torch.tensor([0.3, 0.25, 0.02, 0.3], dtype=f64),
                          torch.tensor([0.2], dtype=f64), torch.tensor([0.15], dtype=f64))
    run = Run(load_config(None, ["data.kind=black-scholes"]), ExactBlackScholes(scaler), scaler,
              ["moneyness", "tau", "r", "sigma"], ["price"])
    fig = greeks_figure(run, evaluate(run, n=200, train=False).samples)
    try:
        assert_laid_out(fig, "greeks")
    finally:
        plt.close(fig)


def test_the_check_catches_a_bad_layout() -> None:
    """Panels spaced by matplotlib's defaults: the y labels of the middle panel run into the
    left one, and a label pushed off the figure is outside it."""
    from nnfin.tune.report import params_figure

    fig = params_figure(_ranking(), ["optim.lr", "train.batch_size", "model.neurons"], "val_mse",
                        {"optim.lr"}, categorical={"model.neurons"})
    fig.subplots_adjust(left=0.01, wspace=0.02)
    with pytest.raises(AssertionError, match=r"outside the figure|overlaps"):
        assert_laid_out(fig, "squeezed")
    plt.close(fig)


def test_saving_draws_once(tmp_path, monkeypatch) -> None:
    fig = plots.loss_figure(_history())
    draws = []
    draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), draw(self, renderer)))
    plots.save(fig, tmp_path / "loss.png")
    assert len(draws) == 1
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optuna_plots_keep_the_style(monkeypatch) -> None:
    """Optuna's plots switch matplotlib to ggplot; the figures drawn after them do not."""
    with plt.style.context("default"):
        before = dict(matplotlib.rcParams)
        figs = _optuna_figures(monkeypatch)
        after = dict(matplotlib.rcParams)
    for fig in figs.values():
        plt.close(fig)
    assert after["axes.facecolor"] == before["axes.facecolor"]
    assert after == before


@pytest.mark.parametrize(("value", "text"), [
    (1e-3, "10⁻³"), (1.0, "10⁰"), (10.0, "10¹"), (1e12, "10¹²"), (2e-3, "2×10⁻³"), (5e4, "5×10⁴"),
])
def test_log_labels_in_plain_text(value, text) -> None:
    """The label matplotlib writes in mathtext (``$\\mathdefault{10^{-3}}$``), in Unicode."""
    from matplotlib.ticker import LogFormatterSciNotation

    mathtext = LogFormatterSciNotation()(value, 0)
    assert mathtext.startswith("$") and mathtext.endswith("$")
    assert plots.PlainLogFormatter()(value, 0) == text


@pytest.mark.parametrize(("low", "mantissas"), [
    (10 ** -0.5, {3, 4, 5, 6, 7, 8, 9}),  # 0.32 .. 1.3: every one of 2..9 in the view
    (1e-3, {2, 5}), (1e-7, set()),
])
def test_log_minor_ticks(low, mantissas) -> None:
    """All of 2..9 within a decade, 2 and 5 up to four decades, none beyond; only in the view."""
    fig = plots.loss_figure(_history(low=low))
    ax = fig.axes[0]
    lo, hi = sorted(ax.get_ylim())
    locs = ax.yaxis.get_minorticklocs()
    assert all(lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9) for v in locs)
    assert {round(v / 10 ** math.floor(math.log10(v) + 1e-9)) for v in locs} == mantissas
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and not any("$" in t for t in labels), labels  # labelled, in plain text
    plt.close(fig)
