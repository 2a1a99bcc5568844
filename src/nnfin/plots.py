"""Figures of a run with matplotlib (Agg backend: no screen needed).

>>> fig = loss_figure(pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.1]}))
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


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
    ax.set_title(title or "loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


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
    ax.set_title("fit")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path, *, force: bool = True, field: str | None = None) -> Path:
    """Save and close ``fig`` through nnfin's writer (``force=False``: refuse an existing file)."""
    from nnfin import files

    return files.save_figure(fig, path, force=force, field=field)
