"""Figures of a run with matplotlib (Agg backend: no screen needed), and :func:`layout`, the one
place every nnfin figure gets its margins before it is saved.

>>> fig = loss_figure(pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.1]}))
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullLocator

PAD = 1.08  # space around the figure's contents and between panels, in font sizes (tight_layout's)


def layout(fig: Figure, *, pad: float = PAD) -> Figure:
    """Lay ``fig`` out for saving: the margins and the space between panels fit the tick labels,
    axis labels, titles and legends, measured at the dpi the figure is saved at. Panels on one
    grid (``subplots``, a colorbar made beside one panel) are laid out by matplotlib's
    ``tight_layout``; panels placed by hand (a colorbar shared by several panels), which it
    cannot lay out, keep their arrangement, scaled so that their text fits below the figure's
    title (only the text is measured for that). Log axes
    get plain-text labels (``10⁻³``, not mathtext) and minor ticks where they help: all of 2..9
    within a decade, 2 and 5 up to four decades, none beyond.

    >>> fig, ax = plt.subplots(figsize=(6, 4))
    >>> _ = ax.set_yscale("log"), ax.plot([1, 2], [1e-3, 1.0]), ax.set_ylabel("loss")
    >>> save(layout(fig), "loss.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from nnfin.files import FIGURE_DPI

    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure(): measure with the Agg canvas
        FigureCanvasAgg(fig)
    fig.set_dpi(FIGURE_DPI)  # measured at the saving dpi, the text is laid out once
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        _light_log_axes(ax)
    if axes:
        grids = {ax.get_subplotspec().get_topmost_subplotspec().get_gridspec()
                 if ax.get_subplotspec() is not None else None for ax in axes}
        if len(grids) == 1 and None not in grids:
            fig.tight_layout(pad=pad)
        else:
            renderer = fig.canvas.get_renderer()
            _fit_inside(fig, axes, {ax: _text_bbox(ax, renderer) for ax in axes}, pad)
        _labels_inside(fig, axes)
    fig.set_layout_engine(None)  # laid out: saving must not lay it out (and draw it) again
    return fig


def _text_bbox(ax: Any, renderer: Any) -> Any:
    """The box (pixels) around ``ax`` and its text: tick labels, axis labels, titles, legends.
    The spines are left out (their extent is the panel's own, and measuring them recomputes
    the ticks four times over)."""
    from matplotlib.spines import Spine

    extra = [a for a in ax.get_default_bbox_extra_artists() if not isinstance(a, Spine)]
    return ax.get_tightbbox(renderer, for_layout_only=True, bbox_extra_artists=extra)


def _fit_inside(fig: Figure, axes: list[Any], text: dict[Any, Any], pad: float) -> None:
    """Scale the panels' arrangement so that their text fits inside the figure, below the
    figure's title."""
    from matplotlib.transforms import Bbox

    w, h = fig.bbox.width, fig.bbox.height
    px = pad * matplotlib.rcParams["font.size"] * fig.dpi / 72
    frame = Bbox.union([ax.get_position() for ax in axes])
    tight = Bbox.union(list(text.values()))
    left, right = frame.x0 - tight.x0 / w, tight.x1 / w - frame.x1
    below, above = frame.y0 - tight.y0 / h, tight.y1 / h - frame.y1
    top = 1 - px / h
    title = getattr(fig, "_suptitle", None)
    if title is not None and title.get_visible() and title.get_text():
        top = min(top, title.get_window_extent(fig.canvas.get_renderer()).y0 / h - px / h)
    x0, x1 = px / w + left, 1 - px / w - right
    y0, y1 = px / h + below, top - above
    if x1 - x0 < 0.2 * frame.width or y1 - y0 < 0.2 * frame.height:
        return  # text larger than the figure: leave the panels where they are
    for ax in axes:
        box = ax.get_position()
        ax.set_position([x0 + (box.x0 - frame.x0) / frame.width * (x1 - x0),
                         y0 + (box.y0 - frame.y0) / frame.height * (y1 - y0),
                         box.width / frame.width * (x1 - x0),
                         box.height / frame.height * (y1 - y0)])


def _labels_inside(fig: Figure, axes: list[Any]) -> None:
    """Slide an axis label or title that is centred on a panel narrower than it, and so runs
    off the figure, back inside along its length (a text longer than the figure stays centred)."""
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        for text, along in ((ax.xaxis.label, "x"), (ax.title, "x"), (ax.yaxis.label, "y")):
            if not text.get_visible() or not text.get_text():
                continue
            box = text.get_window_extent(renderer)
            lo, hi = (box.x0, box.x1) if along == "x" else (box.y0, box.y1)
            end = fig.bbox.width if along == "x" else fig.bbox.height
            shift = -lo if lo < 0 else (end - hi if hi > end else 0.0)
            if shift and hi - lo <= end:
                size = ax.bbox.width if along == "x" else ax.bbox.height
                if along == "x":
                    text.set_x(text.get_position()[0] + shift / size)
                else:
                    text.set_y(text.get_position()[1] + shift / size)


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_POWER = re.compile(r"\$\\mathdefault\{(-?)(?:([0-9.]+)\\times)?([0-9.]+)\^\{(-?[0-9]+)\}\}\$")


class PlainLogFormatter(LogFormatterSciNotation):
    """Matplotlib's log-axis labels as plain text: ``10⁻³`` and ``2×10⁻³`` with Unicode
    superscripts, drawn without the mathtext parser (other labels as matplotlib writes them).

    >>> PlainLogFormatter()(0.002, 0), PlainLogFormatter()(1e-3, 0)
    ('2×10⁻³', '10⁻³')
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        label = super().__call__(x, pos)
        m = _POWER.fullmatch(label)
        if m is None or matplotlib.rcParams["text.usetex"]:
            return label
        sign, coeff, base, power = m.groups()
        return f"{'−' if sign else ''}{coeff + '×' if coeff else ''}{base}{power.translate(_SUPERSCRIPT)}"


class _InView(LogLocator):
    """A :class:`LogLocator` that returns only the ticks inside the view (matplotlib's returns
    the decades around it too, and every returned tick is built, visible or not)."""

    def __call__(self) -> Any:
        lo, hi = sorted(self.axis.get_view_interval())
        locs = np.asarray(super().__call__())
        return locs[(locs >= lo * (1 - 1e-9)) & (locs <= hi * (1 + 1e-9))]


def _light_log_axes(ax: Any) -> None:
    """Plain-text labels and fewer minor ticks on the base-10 log axes of ``ax`` (as
    :func:`layout` describes); axes with a locator or formatter of their own, or another base,
    are left as they are."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() != "log":
            continue
        major, minor = axis.get_major_formatter(), axis.get_minor_formatter()
        parts = (major, minor, axis.get_major_locator(), axis.get_minor_locator())
        if any(getattr(part, "_base", None) != 10 for part in parts):
            continue  # another base (or a matplotlib that names it otherwise): left alone
        for formatter, setter in ((major, axis.set_major_formatter),
                                  (minor, axis.set_minor_formatter)):
            if type(formatter) is LogFormatterSciNotation:
                setter(PlainLogFormatter(10, labelOnlyBase=formatter.labelOnlyBase,
                                         minor_thresholds=formatter.minor_thresholds))
        if type(axis.get_major_locator()) is LogLocator:
            axis.set_major_locator(_InView(10))
        if type(axis.get_minor_locator()) is LogLocator:
            lo, hi = sorted(axis.get_view_interval())
            decades = math.log10(hi / lo) if lo > 0 and math.isfinite(hi / lo) else 0.0
            if decades <= 1:
                axis.set_minor_locator(_InView(10, subs="auto"))
            elif decades <= 4:
                axis.set_minor_locator(_InView(10, subs=(2.0, 5.0)))
            else:
                axis.set_minor_locator(NullLocator())


def loss_figure(history: pd.DataFrame, title: str = "", *, units: str = "model units") -> Figure:
    """Training and validation loss per epoch on a log scale (as the lecture recommends); the
    loss is the training loss function on the data the model sees (``units``: scaled when
    ``[data] scale = true``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, label in (("train_loss", "train"), ("val_loss", "validation")):
        if col in history and history[col].notna().any():
            values = history[col].to_numpy(dtype=float)
            ax.plot(history["epoch"], np.where(values > 0, values, np.nan), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({units})")
    ax.set_title(title or "loss", y=1.0)  # y: right above the panel, not searched for at each draw
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return layout(fig)


def fit_figure(x: np.ndarray, y: np.ndarray, predict, *, feature: str = "x", target: str = "y",
               x_test: np.ndarray | None = None, y_test: np.ndarray | None = None) -> Figure:
    """One input: data vs. the fitted curve. Several inputs: predicted vs. actual."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if x.shape[1] == 1:
        grid = np.linspace(x.min(), x.max(), 400).reshape(-1, 1)
        ax.scatter(x[:, 0], y[:, 0], s=6, alpha=0.5, label="training data", color="tab:blue")
        if x_test is not None and len(x_test):
            ax.scatter(x_test[:, 0], y_test[:, 0], s=8, alpha=0.7, label="test data",
                       color="tab:green")
        ax.plot(grid[:, 0], predict(grid)[:, 0], color="tab:red", lw=2, label="model")
        ax.set_xlabel(feature)
        ax.set_ylabel(target)
    else:
        xs, ys = (x_test, y_test) if x_test is not None and len(x_test) else (x, y)
        pred = predict(xs)
        ax.scatter(ys[:, 0], pred[:, 0], s=6, alpha=0.5)
        lo, hi = float(ys[:, 0].min()), float(ys[:, 0].max())
        ax.plot([lo, hi], [lo, hi], color="tab:red", lw=1)
        ax.set_xlabel(f"{target} (actual)")
        ax.set_ylabel(f"{target} (predicted)")
    ax.grid(True, alpha=0.3)
    ax.legend() if x.shape[1] == 1 else None
    ax.set_title("fit", y=1.0)  # y: right above the panel, not searched for at each draw
    return layout(fig)


def save(fig: Figure, path: str | Path, *, force: bool = True, field: str | None = None) -> Path:
    """Save and close ``fig`` through nnfin's writer (``force=False``: refuse an existing file)."""
    from nnfin import files

    return files.save_figure(fig, path, force=force, field=field)
