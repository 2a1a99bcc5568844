"""Black–Scholes surrogates next to the closed forms: Greeks, hedging and training time per recipe.

Run (from the repository root)::

    .venv/bin/python benchmarks/finance_bs.py                         # trains both shipped recipes
    .venv/bin/python benchmarks/finance_bs.py --run bs_price=runs/bs  # scores a run of `nnfin fit`
    .venv/bin/python benchmarks/finance_bs.py --recipes bs_price --quick   # a smoke test (1 min)

For each recipe of ``examples/finance`` (default ``bs_price`` - differential training of a 4 x 64
SiLU network - and ``bs_price_paper`` - the paper's 4 x 400 ReLU network on prices) it trains the
recipe as ``nnfin fit`` would (no overrides; ``--run NAME=DIR`` scores a trained run instead) and
prints:

* the Greeks table: the network's delta, gamma, vega, theta and rho by autograd through the data
  scaling (:func:`nnfin.finance.greeks`; gamma is the second autograd derivative) against the
  closed forms (:func:`nnfin.finance.bs_greeks`) on ``--points`` (4,000) narrow-range points with
  sigma >= 0.05: R², MAE, max |error|, and the largest gap between the autograd Greek and a central
  difference of ``run.predict`` (the same network, an independent path);
* the price test MSE on fresh wide and narrow test sets (the report's, 20,000 samples each);
* the hedging table of the report (:mod:`nnfin.finance.hedging`): a short book of three calls
  hedged daily for half a year along ``--hedge-paths`` GBM paths with the exact delta and with the
  network's delta: P&L mean, std and the std ratio;
* the training time, and the time to compute the five Greeks of the points by the closed forms and
  by the network (median of 5).

Goals (the shipped ``bs_price.toml``, <= 10 min on 2 CPU cores): delta, vega, theta and rho
R² >= 0.999, delta MAE <= 1e-3, gamma R² >= 0.99, price test MSE <= 1e-7, network hedging P&L std
within 5% of the exact delta's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from finance_common import machine, set_threads
from rich.console import Console
from rich.table import Table

import nnfin
from nnfin.app.report import evaluate
from nnfin.finance import bs_greeks, generate, greeks

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "finance"
FEATURES = ["moneyness", "tau", "r", "sigma"]
NAMED = ["delta", "gamma", "vega", "theta", "rho"]
GOALS = {"r2": 0.999, "gamma_r2": 0.99, "delta_mae": 1e-3, "mse": 1e-7, "hedge_ratio": 1.05}
QUICK = ["data.n=20000", "train.epochs=5"]


def narrow_points(n: int, seed: int) -> np.ndarray:
    """``n`` narrow-range points with sigma >= 0.05 (Latin hypercube, then filtered)."""
    frame, _ = generate("black-scholes", n=int(n * 1.2) + 100, seed=seed, ranges="narrow")
    frame = frame[frame["sigma"] >= 0.05].iloc[:n]
    return frame[FEATURES].to_numpy()


def central_differences(run, x: np.ndarray, h: float = 1e-4) -> dict[str, np.ndarray]:
    """The named Greeks of ``run.predict`` by central differences (step h, gamma 10 h)."""
    i = {f: run.features.index(f) for f in FEATURES}

    def shifted(feat: str, step: float) -> np.ndarray:
        y = x.copy()
        y[:, i[feat]] += step
        return run.predict(y)[:, 0]

    d = {f: (shifted(f, h) - shifted(f, -h)) / (2 * h) for f in FEATURES}
    hg = 10 * h
    gamma = (shifted("moneyness", hg) - 2 * run.predict(x)[:, 0] + shifted("moneyness", -hg)) / hg**2
    return {"delta": d["moneyness"], "gamma": gamma, "vega": d["sigma"], "theta": -d["tau"],
            "rho": d["r"]}


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def score(name: str, run, args: argparse.Namespace, train_s: float | None) -> dict:
    x = narrow_points(args.points, args.seed)
    frame = {f: x[:, k] for k, f in enumerate(FEATURES)}
    import pandas as pd

    net = greeks(run, pd.DataFrame(frame))
    exact = {k: v.numpy() for k, v in bs_greeks(*(frame[f] for f in FEATURES)).items()}
    fd = central_differences(run, x[:, [FEATURES.index(f) for f in run.features]])
    row: dict = {"recipe": name, "activation": run.config.model.activation,
                 "neurons": "x".join(map(str, run.config.model.neurons)),
                 "train_s": train_s if train_s is not None else run.metrics.get("time_s"),
                 "steps": run.metrics.get("steps"), "points": len(x)}
    for g in NAMED:
        err = net[g].to_numpy() - exact[g]
        row[f"{g}_r2"] = float(1 - np.sum(err**2) / np.sum((exact[g] - exact[g].mean()) ** 2))
        row[f"{g}_mae"] = float(np.mean(np.abs(err)))
        row[f"{g}_max"] = float(np.max(np.abs(err)))
        row[f"{g}_vs_fd"] = float(np.max(np.abs(net[g].to_numpy() - fd[g])))
        fd_err = fd[g] - exact[g]
        row[f"{g}_fd_r2"] = float(1 - np.sum(fd_err**2) / np.sum((exact[g] - exact[g].mean()) ** 2))
    rep = evaluate(run, n=args.test_n, train=False, iv=False, hedge_paths=args.hedge_paths)
    m = rep.metrics.set_index(["split", "quantity"])
    for split in ("test-wide", "test-narrow"):
        row[f"{split.removeprefix('test-')}_mse"] = float(m.loc[(split, "price"), "mse"])
    h = rep.hedging.set_index("hedge")
    for hedge in h.index:
        key = hedge.replace(" ", "_")
        row[f"{key}_pnl_mean"] = float(h.loc[hedge, "mean"])
        row[f"{key}_pnl_std"] = float(h.loc[hedge, "std"])
        row[f"{key}_std_ratio"] = float(h.loc[hedge, "std_ratio"])
    row["greeks_closed_s"] = median_time(lambda: bs_greeks(*(frame[f] for f in FEATURES)))
    row["greeks_net_s"] = median_time(lambda: greeks(run, pd.DataFrame(frame)))
    row["goals"] = {
        "delta, vega, theta, rho R2 >= 0.999": all(row[f"{g}_r2"] >= GOALS["r2"]
                                                  for g in ("delta", "vega", "theta", "rho")),
        "delta MAE <= 1e-3": row["delta_mae"] <= GOALS["delta_mae"],
        "gamma R2 >= 0.99": row["gamma_r2"] >= GOALS["gamma_r2"],
        "price test MSE <= 1e-7 (wide and narrow)": max(row["wide_mse"], row["narrow_mse"]) <= GOALS["mse"],
        "hedging std within 5% of exact": row["network_delta_std_ratio"] <= GOALS["hedge_ratio"],
    }
    return row


def greeks_table(rows: list[dict], points: int) -> Table:
    t = Table(title=f"Greeks vs closed forms, {points:,} narrow-range points with sigma >= 0.05 "
                    f"(network: autograd through the scaling; gamma: second autograd derivative)")
    t.add_column("recipe")
    t.add_column("Greek")
    for col in ("R²", "MAE", "max |err|", "R², central diff. of predict", "max |autograd - fd|"):
        t.add_column(col, justify="right")
    t.add_row("closed forms", "all", "1", "0", "0", "", "")
    for r in rows:
        for g in NAMED:
            t.add_row(r["recipe"] if g == "delta" else "", g, f"{r[f'{g}_r2']:.6f}", f"{r[f'{g}_mae']:.2e}",
                      f"{r[f'{g}_max']:.2e}", f"{r[f'{g}_fd_r2']:.6f}", f"{r[f'{g}_vs_fd']:.1e}")
    return t


def hedging_table(rows: list[dict], paths: int) -> Table:
    t = Table(title=f"delta hedging, short calls K = 0.9, 1, 1.1 (T = 0.9), daily over 0.5 years, "
                    f"{paths:,} GBM paths (sigma 0.2, r 0.05)")
    for col in ("recipe", "hedge", "P&L mean", "P&L std", "std / exact"):
        t.add_column(col, justify="left" if col in ("recipe", "hedge") else "right")
    for i, r in enumerate(rows):
        hedges = ("exact delta", "network delta", "no hedge") if i == 0 else ("network delta",)
        for hedge in hedges:
            key = hedge.replace(" ", "_")
            label = "closed form" if hedge != "network delta" else r["recipe"]
            t.add_row(label, hedge, f"{r[f'{key}_pnl_mean']:.2e}", f"{r[f'{key}_pnl_std']:.3e}",
                      f"{r[f'{key}_std_ratio']:.4f}")
    return t


def summary_table(rows: list[dict]) -> Table:
    t = Table(title="price accuracy and time")
    for col in ("recipe", "network", "steps", "train time", "test-wide MSE", "test-narrow MSE",
                "5 Greeks: closed form", "5 Greeks: network"):
        t.add_column(col, justify="left" if col in ("recipe", "network") else "right")
    for r in rows:
        t.add_row(r["recipe"], f"{r['neurons']} {r['activation']}", str(r["steps"]),
                  f"{r['train_s']:.0f} s", f"{r['wide_mse']:.2e}", f"{r['narrow_mse']:.2e}",
                  f"{r['greeks_closed_s'] * 1e3:.1f} ms", f"{r['greeks_net_s'] * 1e3:.1f} ms")
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default="bs_price,bs_price_paper", help="names in examples/finance")
    p.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                   help="score the trained run DIR for recipe NAME instead of training it")
    p.add_argument("--points", type=int, default=4000, help="narrow-range points for the Greeks")
    p.add_argument("--test-n", type=int, default=20_000, help="samples of each price test set")
    p.add_argument("--hedge-paths", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1001, help="seed of the Greeks points")
    p.add_argument("--quick", action="store_true", help=f"train with {' '.join(QUICK)} (a smoke test)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args()
    set_threads(args.threads)
    given = dict(item.split("=", 1) for item in args.run)
    console = Console(width=140)
    console.print(f"machine: {machine()}")
    rows = []
    for name in args.recipes.split(","):
        if name in given:
            run, train_s = nnfin.load_run(given[name]), None
            console.print(f"{name}: scoring {given[name]}")
        else:
            console.print(f"{name}: training examples/finance/{name}.toml"
                          + (f" with {' '.join(QUICK)}" if args.quick else " (no overrides)"))
            start = time.perf_counter()
            run = nnfin.fit(str(RECIPES / f"{name}.toml"), write=False,
                            overrides=[*(QUICK if args.quick else []), "train.progress=false"])
            train_s = time.perf_counter() - start
        rows.append(score(name, run, args, train_s))
    console.print(greeks_table(rows, args.points))
    console.print(hedging_table(rows, args.hedge_paths))
    console.print(summary_table(rows))
    for r in rows:
        met = [k for k, ok in r["goals"].items() if ok]
        missed = [k for k, ok in r["goals"].items() if not ok]
        console.print(f"{r['recipe']}: goals met: {'; '.join(met) or 'none'}"
                      + (f"; not met: {'; '.join(missed)}" if missed else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
