"""Figures of the finance report: the error over (moneyness, maturity), the Greeks, hedging P&L.

>>> x = np.random.default_rng(0).uniform(0.5, 1.5, (200, 2))
>>> fig = error_surface_figure({"test-wide": {"x": x, "y": x[:, 0], "pred": x[:, 0] + 1e-4}},
...                            ["moneyness", "tau"], "price")
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from nnfin import plots  # selects the Agg backend before pyplot is imported; lays figures out
from nnfin.finance.black_scholes import bs_greeks
from nnfin.finance.surrogate import available_greeks, surrogate_greeks

SLICE = {"tau": 0.5, "r": 0.05, "sigma": 0.3}  # inside the wide and narrow ranges


def error_surface_figure(tests: dict[str, dict[str, np.ndarray]], features: list[str],
                         target: str) -> Figure:
    """Mean absolute error of the target per hexagonal cell of (moneyness, tau), log colours."""
    import matplotlib.pyplot as plt

    i_m, i_t = features.index("moneyness"), features.index("tau")
    fig, axes = plt.subplots(1, len(tests), figsize=(5.5 * len(tests), 4.4), squeeze=False)
    for ax, (split, s) in zip(axes[0], tests.items(), strict=True):
        err = np.abs(s["pred"] - s["y"])
        floor = max(float(err[err > 0].min()) if (err > 0).any() else 1e-16, 1e-16)
        hb = ax.hexbin(s["x"][:, i_m], s["x"][:, i_t], C=np.maximum(err, floor),
                       reduce_C_function=np.mean, gridsize=28, cmap="viridis", norm=LogNorm())
        fig.colorbar(hb, ax=ax, label=f"mean |{target} error|")
        ax.set_xlabel("moneyness S0/K")
        ax.set_ylabel("maturity tau (years)")
        ax.set_title(f"{split}: max |error| {err.max():.2e}, MAE {err.mean():.2e}")
    return plots.layout(fig)


def greeks_figure(run: Any, samples: dict[str, dict[str, np.ndarray]], *, option: str = "call",
                  gamma_fd_step: float | None = None) -> Figure:
    """Top: network vs. analytic Greeks along moneyness at tau = 0.5, r = 0.05, sigma = 0.3.
    Bottom: the network's Greek errors over moneyness on the test sets. ``gamma_fd_step``: also
    show the difference quotient of the network delta (for piecewise-linear networks)."""
    import matplotlib.pyplot as plt

    names = available_greeks(run.features)
    fd = gamma_fd_step is not None and any("gamma_fd_nn" in s for s in samples.values())
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.4), squeeze=False)
    m = np.linspace(0.45, 1.55, 400)
    cols = {"moneyness": m, **{k: np.full_like(m, v) for k, v in SLICE.items()}}
    grid = np.column_stack([cols[f] for f in run.features])
    net = surrogate_greeks(run, grid, names, gamma_fd_step=gamma_fd_step if fd else None)
    exact = {k: v.numpy() for k, v in bs_greeks(m, *(cols[k] for k in SLICE), option=option).items()}
    tests = {k: v for k, v in samples.items() if k.startswith("test")} or samples
    i_m = run.features.index("moneyness")
    for j, name in enumerate(names):
        top, bottom = axes[0, j], axes[1, j]
        top.plot(m, exact[name], color="black", lw=2, label="Black–Scholes")
        top.plot(m, net[name], color="tab:red", lw=1.2, label="network (autograd)")
        if name == "gamma" and fd:
            top.plot(m, net["gamma_fd"], color="tab:blue", lw=1, ls="--", label="network, fd of delta")
        top.set_title(f"{name}: tau 0.5, r 0.05, sigma 0.3", fontsize=9)
        top.set_xlabel("moneyness")
        for split, s in tests.items():
            key = "gamma_fd" if name == "gamma" and fd else name
            if f"{key}_nn" in s:
                bottom.scatter(s["x"][:, i_m], s[f"{key}_nn"] - s[f"{key}_bs"], s=1, alpha=0.3,
                               label=split)
        bottom.set_title(f"{'gamma_fd' if name == 'gamma' and fd else name} error (network - BS)",
                         fontsize=9)
        bottom.set_xlabel("moneyness")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7, markerscale=8)
    return plots.layout(fig)


def hedging_figure(pnls: dict[str, np.ndarray]) -> Figure:
    """Left: histograms of the hedging P&L per path for every hedge but ``no hedge`` (much wider;
    its std is in the title). Right: network minus exact P&L per path (the delta's own error).

    >>> rng = np.random.default_rng(0)
    >>> fig = hedging_figure({"exact delta": rng.normal(0, 1e-2, 500),
    ...                       "network delta": rng.normal(0, 1.1e-2, 500)})
    """
    import matplotlib.pyplot as plt

    hedged = {k: v for k, v in pnls.items() if k != "no hedge"}
    both = "exact delta" in pnls and "network delta" in pnls
    fig, axes = plt.subplots(1, 2 if both else 1, figsize=(11 if both else 5.5, 4.2), squeeze=False)
    ax = axes[0, 0]
    values = np.concatenate(list(hedged.values()))
    bins = np.linspace(*np.quantile(values, [0.001, 0.999]), 80)
    for name, p in hedged.items():
        ax.hist(np.clip(p, bins[0], bins[-1]), bins=bins, histtype="step", lw=1.5,
                label=f"{name}: mean {p.mean():.2e}, std {p.std(ddof=1):.2e}")
    title = "hedging P&L per path"
    if "no hedge" in pnls:
        title += f" (no hedge: std {pnls['no hedge'].std(ddof=1):.3f})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("P&L at the horizon (units of S0)")
    ax.set_ylabel("paths")
    ax.legend(fontsize=7)
    if both:
        diff = pnls["network delta"] - pnls["exact delta"]
        ratio = pnls["network delta"].std(ddof=1) / pnls["exact delta"].std(ddof=1)
        axes[0, 1].hist(diff, bins=80, color="tab:red", alpha=0.7)
        axes[0, 1].set_title(f"network - exact P&L per path (std ratio {ratio:.4f})", fontsize=9)
        axes[0, 1].set_xlabel("P&L difference (units of S0)")
    for a in axes[0]:
        a.grid(True, alpha=0.3)
        a.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    return plots.layout(fig)
