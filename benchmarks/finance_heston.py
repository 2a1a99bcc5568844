"""The shipped Heston recipe: its price accuracy, its Greeks against the COS price, its training time.

Run (from the repository root)::

    .venv/bin/python benchmarks/finance_heston.py --fit              # nnfin fit the recipe, then score
    .venv/bin/python benchmarks/finance_heston.py --run runs/heston  # score a trained run

``--fit`` runs ``nnfin fit examples/finance/heston.toml`` as a user would (a subprocess, no
overrides but the run folder) and times all of it: labelling the data by COS with its derivatives,
training, and the report the fit writes. The run is then scored on ``--n`` fresh Latin-hypercube
points of the recipe's ranges (another seed than the training data's), on all of them and on the
*inner* ones (every input at least ``--margin`` of its range away from both ends, where
calibration quotes live):

* the price against the COS price (N = 1500, L = 50);
* delta = dV/dmoneyness and dV/dv0 of the network (``nnfin.finance.greeks``: autograd through the
  data scaling, float64) against central differences of the COS price (steps ``1e-4`` and
  ``1e-5``), an independent reference;
* the same derivatives of the COS price by autograd (the recipe's training labels,
  ``heston_cos_sensitivities``) against those differences: how exact the labels are.

Goals (set from the measurements in the README, with ~2.5x room): price RMSE <= 1e-4, delta
MAE <= 1e-3 and dV/dv0 MAE <= 1e-3 on all test points, with the fit (labelling included) within
15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from finance_common import machine

import nnfin
from nnfin.app.report import finance_metrics
from nnfin.finance import generate
from nnfin.finance.heston import HESTON_INPUTS, heston_cos_price, heston_cos_sensitivities

RECIPE = Path("examples/finance/heston.toml")
GOALS = {"price_rmse": 1e-4, "delta_mae": 1e-3, "v0_mae": 1e-3, "minutes": 15.0}
STEPS = {"moneyness": 1e-4, "v0": 1e-5}


def cos_price(x: pd.DataFrame) -> np.ndarray:
    return heston_cos_price(x["moneyness"].to_numpy(), x["tau"].to_numpy(), x["r"].to_numpy(),
                            **{k: x[k].to_numpy() for k in ("rho", "kappa", "vbar", "gamma", "v0")}
                            ).numpy()


def central_difference(x: pd.DataFrame, name: str) -> np.ndarray:
    h = STEPS[name]
    up, down = x.copy(), x.copy()
    up[name] += h
    down[name] -= h
    return (cos_price(up) - cos_price(down)) / (2 * h)


def fit_recipe(run_dir: Path) -> dict[str, float]:
    """``nnfin fit`` of the recipe in a subprocess: wall time and the child's CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("nnfin")), "fit", str(RECIPE), "--set",
                    f"run.dir={run_dir}", "--force"], check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"fit_wall_s": wall, "fit_cpu_s": cpu}


def score(run, n: int, seed: int, margin: float) -> tuple[pd.DataFrame, dict[str, float]]:
    frame, _ = generate("heston", n=n, seed=seed)
    x = frame[list(HESTON_INPUTS)]
    ranges = {k: tuple(v) for k, v in
              generate("heston", n=1, seed=0)[1]["ranges"].items()}
    inner = np.ones(len(x), dtype=bool)
    for k, (lo, hi) in ranges.items():
        w = hi - lo
        inner &= (x[k] >= lo + margin * w).to_numpy() & (x[k] <= hi - margin * w).to_numpy()
    t0 = time.perf_counter()
    pred = run.predict(x)[:, 0]
    t_pred = time.perf_counter() - t0
    g = nnfin.finance.greeks(run, x)
    net = {"delta": g["d_price/d_moneyness"].to_numpy(), "v0": g["d_price/d_v0"].to_numpy()}
    ref = {k: central_difference(x, k) for k in ("moneyness", "v0")}
    ref["delta"] = ref.pop("moneyness")
    _, labels = heston_cos_sensitivities(x["moneyness"].to_numpy(), x["tau"].to_numpy(),
                                         x["r"].to_numpy(), **{k: x[k].to_numpy() for k in
                                                               ("rho", "kappa", "vbar", "gamma", "v0")})
    cos = {"delta": labels["moneyness"].numpy(), "v0": labels["v0"].numpy()}
    rows = []
    for region, keep in (("all", np.ones(len(x), dtype=bool)), ("inner", inner)):
        y = frame["price"].to_numpy()
        rows.append({"region": region, "quantity": "price", "source": "network",
                     **finance_metrics(y[keep], pred[keep])})
        for q, label in (("delta", "delta = dV/dm"), ("v0", "dV/dv0")):
            rows.append({"region": region, "quantity": label, "source": "network",
                         **finance_metrics(ref[q][keep], net[q][keep])})
            rows.append({"region": region, "quantity": label, "source": "COS autograd (labels)",
                         **finance_metrics(ref[q][keep], cos[q][keep])})
    return pd.DataFrame(rows), {"predict_s": t_pred, "n_inner": int(inner.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="a trained run of the recipe (default: --fit one)")
    p.add_argument("--fit", action="store_true", help="nnfin fit the recipe first, timed")
    p.add_argument("--out", type=Path, default=Path("runs/heston-bench"),
                   help="run folder for --fit (replaced)")
    p.add_argument("--n", type=int, default=4000, help="test points")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    print(f"machine: {machine()}")
    times: dict[str, float] = {}
    if args.fit or args.run is None:
        times = fit_recipe(args.out)
        args.run = args.out
    run = nnfin.load_run(args.run)
    metrics = run.metrics
    table, extra = score(run, args.n, args.seed, args.margin)
    pd.set_option("display.width", 160)
    cols = ["region", "quantity", "source", "rmse", "mae", "max_abs_error", "r2", "n"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    net = table[(table.source == "network") & (table.region == "all")].set_index("quantity")
    print(f"recipe: {run.config.model.neurons} {run.config.model.activation}, n = {run.config.data.n:,}, "
          f"{metrics.get('epochs')} epochs, {metrics.get('steps')} steps, {metrics.get('time_s', 0):.0f} s "
          f"of training" + (f"; nnfin fit {times['fit_wall_s'] / 60:.1f} min wall, "
                            f"{times['fit_cpu_s'] / 60:.1f} min CPU (labelling, training, report)"
                            if times else ""))
    checks = {"price RMSE": (net.loc["price", "rmse"], GOALS["price_rmse"]),
              "delta MAE": (net.loc["delta = dV/dm", "mae"], GOALS["delta_mae"]),
              "dV/dv0 MAE": (net.loc["dV/dv0", "mae"], GOALS["v0_mae"])}
    if times:
        checks["fit minutes"] = (times["fit_wall_s"] / 60, GOALS["minutes"])
    for name, (value, goal) in checks.items():
        print(f"{name}: {value:.3g} (goal <= {goal:g}: {'met' if value <= goal else 'not met'})")
    print(f"{extra['n_inner']} of {args.n} test points are inner; the network predicts them all in "
          f"{extra['predict_s'] * 1e3:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"table": table.to_dict(orient="records"), **times,
                                         "metrics": {k: metrics.get(k) for k in
                                                     ("epochs", "steps", "time_s")}},
                                        indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
