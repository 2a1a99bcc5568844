"""IV-ANN against the solvers: 20,000 implied volatilities (the paper's Table 8 setting).

Run (from the repository root)::

    .venv/bin/python benchmarks/finance_iv.py                  # train 10 min, then compare
    .venv/bin/python benchmarks/finance_iv.py --quick          # train 1 min
    .venv/bin/python benchmarks/finance_iv.py --run runs/iv    # compare a run trained before

The network is ``examples/finance/implied_vol.toml`` (4 x 400 ReLU, inputs moneyness, tau, r
and the log time value; r widened to [0, 0.1] so that the Table 8 options, r = 0, are inside
the training ranges), trained on ``--n`` samples for ``--minutes`` with the learning rate
following a cosine from 1e-3 to 1e-5 over that time (``finance_common.TimeBudget``); or any
implied-vol run given with ``--run``.

The 20,000 options: calls with r = 0, T = 0.5, S0 = K = 1 and sigma uniform in [0.01, 0.99]
(Liu, Oosterlee & Bohte, 2019, Table 8), priced by Black–Scholes; every method is scored
against the sigma the price was made from. Methods (``nnfin.finance.iv_compare``):

* ``network``             - inputs from the prices (log time value), ``run.predict`` (scaling,
  forward pass in the run's dtype); best of 3 passes;
* ``newton (vectorised)`` - ``nnfin.finance.implied_vol``, safeguarded Newton on all options
  at once, float64; best of 3 passes;
* ``brentq (per option)`` - ``scipy.optimize.brentq`` on ``[1e-6, 10]`` for each option in a
  Python loop (``nnfin.finance.implied_vol_brentq``); one pass.

Goal: the network >= 100x faster than brentq at MAE <= 1e-4.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from finance_common import machine, set_threads, train_within
from rich.console import Console
from rich.table import Table

import nnfin
from nnfin.app.report import evaluate
from nnfin.finance.iv_compare import compare_iv_solvers

RECIPE = "examples/finance/implied_vol.toml"
GOALS = {"speedup": 100.0, "mae": 1e-4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="an implied-vol run folder to compare (no training)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time")
    p.add_argument("--n", type=int, default=200_000, help="training samples")
    p.add_argument("--neurons", default="400,400,400,400")
    p.add_argument("--options", type=int, default=20_000, help="options to invert")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="1 minute of training, n = 50,000")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.minutes, args.n = min(args.minutes, 1.0), min(args.n, 50_000)
    console = Console(width=140)
    console.print(f"machine: {machine()}")
    if args.run is not None:
        run = nnfin.load_run(args.run)
        console.print(f"network: {args.run} ({run.config.model.neurons} {run.config.model.activation})")
    else:
        start = time.perf_counter()
        run = train_within([f"data.n={args.n}", "data.split=[1.0, 0.0, 0.0]",
                            f"model.neurons=[{args.neurons}]"], args.minutes * 60, config=RECIPE)
        console.print(f"network: {args.neurons} relu trained on {args.n:,} samples for "
                      f"{run.metrics['time_s']:.0f} s ({run.metrics['steps']} steps, "
                      f"{time.perf_counter() - start:.0f} s with data generation)")
    res = compare_iv_solvers(run.predict, run.features, n=args.options, seed=0, repeats=args.repeats)
    table = Table(title=f"{args.options:,} implied volatilities: r = 0, T = 0.5, S0 = K = 1, "
                        "sigma ~ U[0.01, 0.99]")
    for col in ("method", "time (s)", "µs / option", "speedup vs brentq", "MAE", "RMSE", "max |err|",
                "failed"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in res.to_dict(orient="records"):
        table.add_row(r["method"], f"{r['time_s']:.4g}", f"{r['us_per_option']:.3g}",
                      f"{r['speedup_vs_brentq']:.3g}x", f"{r['mae']:.3g}", f"{r['rmse']:.3g}",
                      f"{r['max_abs_error']:.3g}", str(r["n_failed"]))
    console.print(table)
    net = res.set_index("method").loc["network"]
    wide = evaluate(run, n=20_000, train=False, iv=False).metrics
    console.print("network on fresh test sets (sigma): " + ", ".join(
        f"{r['split']} MAE {r['mae']:.3g}, max {r['max_abs_error']:.3g}"
        for r in wide.to_dict(orient="records")))
    ok_speed, ok_mae = net["speedup_vs_brentq"] >= GOALS["speedup"], net["mae"] <= GOALS["mae"]
    console.print(f"goal: >= {GOALS['speedup']:g}x faster than brentq ({net['speedup_vs_brentq']:.3g}x: "
                  f"{'met' if ok_speed else 'not met'}) at MAE <= {GOALS['mae']:g} "
                  f"({net['mae']:.3g}: {'met' if ok_mae else 'not met'})")
    if args.json:
        args.json.write_text(json.dumps({"solvers": res.to_dict(orient="records"),
                                         "test_sets": wide.to_dict(orient="records")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
