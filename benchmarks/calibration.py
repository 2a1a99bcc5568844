"""Heston calibration through the trained surrogate, next to QuantLib's calibrator, in one process.

Run (from the repository root, after ``nnfin fit examples/finance/heston.toml --set run.dir=runs/heston``
and ``.venv/bin/pip install -r requirements-bench.txt``)::

    .venv/bin/python benchmarks/calibration.py --run runs/heston
    .venv/bin/python benchmarks/calibration.py --run runs/heston --surfaces 20 --repeats 1  # quick

The quotes come from an independent exact pricer, QuantLib's ``AnalyticHestonEngine``: for each
of ``--surfaces`` surfaces, known parameters ``rho, kappa, vbar, gamma, v0`` and a rate ``r``
drawn from a Latin hypercube of the run's training ranges (shrunk by ``--margin`` of each width
on both sides), spot 1, 7 strikes K in {0.8, 0.9, 0.95, 1, 1.05, 1.1, 1.2} x 5 maturities of
91, 182, 274, 365 and 456 days; the quote is the call price over the strike (``V/K``, moneyness
``1/K``), in the units the surrogate predicts. QuantLib's engine and nnfin's COS pricer agree on
them to ~1e-15.

* **nnfin** calibrates all surfaces at once through the network (``nnfin.finance.calibrate``:
  Latin-hypercube multi-start, Adam then L-BFGS, autograd; the median time of ``--repeats``
  calls), then again with ``polish=True`` (scipy ``least_squares`` on the exact COS price).
* **QuantLib** calibrates the surfaces one by one: ``HestonModel.calibrate`` with
  Levenberg–Marquardt over ``HestonModelHelper`` s (price errors) and the analytic engine, from
  the centre of the ranges (the time of the ``calibrate`` calls, median of ``--repeats`` passes).

Every answer is repriced by QuantLib's engine at the fitted parameters: the *repriced RMSE*
against the quotes, per surface, in ``V/K`` units. Parameter errors are printed too; which
parameters the quotes pin down is measured from the exact Jacobian at the true parameters: the
standard error each parameter would have if every quote carried a price error of 1e-4
(``sqrt(diag((J^T J)^-1)) * 1e-4``), as a fraction of its range.

Goals: nnfin >= 100x faster than QuantLib's calibrator, repriced RMSE <= 2e-3 for the network
alone and <= 1e-5 after the polish.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from finance_common import machine, set_threads

import nnfin
from nnfin.app.calibrate import stored_ranges
from nnfin.finance.calibration import latin_hypercube, training_ranges
from nnfin.finance.heston import heston_cos_sensitivities

PARAMS = ["rho", "kappa", "vbar", "gamma", "v0"]
STRIKES = (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)
DAYS = (91, 182, 274, 365, 456)
GOALS = {"speedup": 100.0, "rmse_network": 2e-3, "rmse_polished": 1e-5}


def ql_setup():
    import QuantLib as ql

    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    return ql, today, ql.Actual365Fixed()


def ql_model(params: dict[str, float], r: float):
    ql, today, dc = ql_setup()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    spot = ql.QuoteHandle(ql.SimpleQuote(1.0))
    process = ql.HestonProcess(rts, dts, spot, params["v0"], params["kappa"], params["vbar"],
                               params["gamma"], params["rho"])
    return ql.HestonModel(process), rts, dts


def ql_prices(params: dict[str, float], r: float) -> np.ndarray:
    """QuantLib's analytic Heston call prices over the strike on the benchmark's grid."""
    ql, today, _ = ql_setup()
    model, _, _ = ql_model(params, r)
    engine = ql.AnalyticHestonEngine(model)
    out = []
    for d in DAYS:
        for k in STRIKES:
            option = ql.EuropeanOption(ql.PlainVanillaPayoff(ql.Option.Call, k),
                                       ql.EuropeanExercise(today + d))
            option.setPricingEngine(engine)
            out.append(option.NPV() / k)
    return np.array(out)


def make_quotes(ranges: dict[str, tuple[float, float]], n: int, seed: int, margin: float
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [*PARAMS, "r"]
    box = np.array([ranges[p] for p in names])
    inner = np.column_stack([box[:, 0] + margin * (box[:, 1] - box[:, 0]),
                             box[:, 1] - margin * (box[:, 1] - box[:, 0])])
    truth = pd.DataFrame(latin_hypercube(inner, n, seed), columns=names)
    grid_m = np.array([1.0 / k for _ in DAYS for k in STRIKES])
    grid_tau = np.array([d / 365.0 for d in DAYS for _ in STRIKES])
    rows = []
    for s, p in truth.iterrows():
        price = ql_prices(p.to_dict(), float(p["r"]))
        rows.append(pd.DataFrame({"surface": s, "moneyness": grid_m, "tau": grid_tau,
                                  "r": float(p["r"]), "price": price}))
    return pd.concat(rows, ignore_index=True), truth


def ql_calibrate(quotes: pd.DataFrame, start: dict[str, float]) -> tuple[pd.DataFrame, float]:
    """QuantLib's Levenberg–Marquardt calibration, surface by surface; its summed time."""
    from nnfin.finance.implied_volatility import implied_vol

    ql, _, _ = ql_setup()
    cal = ql.NullCalendar()
    fitted, elapsed = [], 0.0
    for s, q in quotes.groupby("surface", sort=True):
        r = float(q["r"].iloc[0])
        model, rts, dts = ql_model(start, r)
        engine = ql.AnalyticHestonEngine(model)
        vols = implied_vol(torch.tensor(q["price"].to_numpy()), torch.tensor(q["moneyness"].to_numpy()),
                           torch.tensor(q["tau"].to_numpy()), torch.tensor(q["r"].to_numpy())).numpy()
        helpers = []
        for (m, tau), vol in zip(q[["moneyness", "tau"]].to_numpy(), vols, strict=True):
            h = ql.HestonModelHelper(ql.Period(round(tau * 365), ql.Days), cal, 1.0, 1.0 / m,
                                     ql.QuoteHandle(ql.SimpleQuote(float(vol))), rts, dts,
                                     ql.BlackCalibrationHelper.PriceError)
            h.setPricingEngine(engine)
            helpers.append(h)
        t0 = time.perf_counter()
        model.calibrate(helpers, ql.LevenbergMarquardt(1e-8, 1e-8, 1e-8),
                        ql.EndCriteria(1000, 100, 1e-8, 1e-8, 1e-8))
        elapsed += time.perf_counter() - t0
        theta, kappa, sigma, rho, v0 = model.params()
        fitted.append({"surface": s, "rho": rho, "kappa": kappa, "vbar": theta, "gamma": sigma,
                       "v0": v0})
    return pd.DataFrame(fitted), elapsed


def repriced_rmse(fitted: pd.DataFrame, quotes: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """QuantLib's price at each surface's fitted parameters against the quotes (V/K units)."""
    out = []
    for s, q in quotes.groupby("surface", sort=True):
        row = fitted.loc[fitted["surface"] == s].iloc[0]
        price = ql_prices({p: float(row[p]) for p in PARAMS}, float(truth.loc[s, "r"]))
        out.append(float(np.sqrt(np.mean((price - q["price"].to_numpy()) ** 2))))
    return np.array(out)


def identifiability(quotes: pd.DataFrame, truth: pd.DataFrame, ranges: dict[str, tuple[float, float]],
                    noise: float = 1e-4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per surface and parameter: the standard error under a price noise of ``noise`` per quote
    (from the exact COS Jacobian at the true parameters), as a fraction of the range width; and
    the median correlation of the parameters' errors (which move together)."""
    rows, corrs = [], []
    width = np.array([ranges[p][1] - ranges[p][0] for p in PARAMS])
    for s, q in quotes.groupby("surface", sort=True):
        t = truth.loc[s]
        n = len(q)
        _, d = heston_cos_sensitivities(q["moneyness"].to_numpy(), q["tau"].to_numpy(),
                                        q["r"].to_numpy(), **{p: np.full(n, t[p]) for p in PARAMS})
        jac = np.column_stack([d[p].numpy() for p in PARAMS])
        cov = np.linalg.pinv(jac.T @ jac) * noise**2
        sd = np.sqrt(np.diag(cov))
        rows.append(dict(zip(PARAMS, sd / width, strict=True)))
        corrs.append(cov / np.outer(sd, sd))
    return pd.DataFrame(rows), pd.DataFrame(np.median(corrs, axis=0), index=PARAMS, columns=PARAMS)


def param_errors(fitted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    f = fitted.sort_values("surface").reset_index(drop=True)
    return {p: float(np.median(np.abs(f[p].to_numpy() - truth[p].to_numpy()))) for p in PARAMS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a trained Heston price surrogate")
    p.add_argument("--surfaces", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each calibrator")
    p.add_argument("--margin", type=float, default=0.1,
                   help="share of each range width left out on both sides when drawing parameters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = p.parse_args()
    set_threads(args.threads)
    run = nnfin.load_run(args.run)
    ranges = training_ranges(run, stored_ranges(run))
    print(f"machine: {machine()}")
    quotes, truth = make_quotes(ranges, args.surfaces, args.seed, args.margin)
    print(f"{args.surfaces} surfaces x {len(STRIKES)} strikes x {len(DAYS)} maturities from "
          f"QuantLib's AnalyticHestonEngine; parameters from the inner {1 - 2 * args.margin:.0%} of "
          "the ranges " + ", ".join(f"{k} [{ranges[k][0]:g}, {ranges[k][1]:g}]" for k in [*PARAMS, "r"]))
    nnfin.finance.calibrate(run, quotes.head(35))  # warm-up (first calls allocate)
    times, cal = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cal = nnfin.finance.calibrate(run, quotes)
        times.append(time.perf_counter() - t0)
    t_net = statistics.median(times)
    t0 = time.perf_counter()
    polished = nnfin.finance.calibrate(run, quotes, polish=True)
    t_polish_call = time.perf_counter() - t0
    start = {k: 0.5 * (ranges[k][0] + ranges[k][1]) for k in PARAMS}
    ql_times, ql_fit = [], None
    for _ in range(args.repeats):
        ql_fit, elapsed = ql_calibrate(quotes, start)
        ql_times.append(elapsed)
    t_ql = statistics.median(ql_times)
    assert cal is not None and ql_fit is not None
    net_fit = cal.fitted
    pol_fit = polished.fitted
    rm = {"network": repriced_rmse(net_fit, quotes, truth),
          "polished": repriced_rmse(pol_fit, quotes, truth),
          "quantlib": repriced_rmse(ql_fit, quotes, truth)}
    errs = {"network": param_errors(net_fit, truth), "polished": param_errors(pol_fit, truth),
            "quantlib": param_errors(ql_fit, truth)}
    ident, corr = identifiability(quotes, truth, ranges)
    polish_time = float(pol_fit["time_s"].sum())
    rows = [("nnfin network", t_net, rm["network"], errs["network"]),
            ("nnfin network + polish", t_net + polish_time, rm["polished"], errs["polished"]),
            ("QuantLib LM, one by one", t_ql, rm["quantlib"], errs["quantlib"])]
    print()
    header = (f"{'calibrator':<26}{'time s':>9}{'vs QL':>8}{'RMSE med':>10}{'RMSE max':>10}"
              f"{'<=2e-3':>8}" + "".join(f"{'|d' + k + '|':>9}" for k in PARAMS))
    print(header)
    for name, t, r, e in rows:
        print(f"{name:<26}{t:>9.3g}{t_ql / t:>7.3g}x{np.median(r):>10.2e}{r.max():>10.2e}"
              f"{np.mean(r <= 2e-3):>8.0%}" + "".join(f"{e[k]:>9.3g}" for k in PARAMS))
    print("(|dX|: median absolute error of the parameter over the surfaces)")
    print(f"nnfin network: {cal.time_s:.3g} s in the optimisation ({t_net:.3g} s the whole call, "
          f"{args.surfaces} surfaces together), {int(net_fit['iterations'].iloc[0])} iterations; "
          f"polish: {polish_time:.3g} s ({pol_fit['iterations'].median():.0f} exact-pricer calls "
          f"per surface, median; the call with polish {t_polish_call:.3g} s)")
    print(f"speed: QuantLib's calibrator {t_ql:.3g} s for {args.surfaces} surfaces one by one, "
          f"nnfin {t_net:.3g} s: {t_ql / t_net:.0f}x (goal >= {GOALS['speedup']:.0f}x)")
    print(f"repriced RMSE, network only: median {np.median(rm['network']):.2e}, max "
          f"{rm['network'].max():.2e} (goal <= {GOALS['rmse_network']:g}); polished: median "
          f"{np.median(rm['polished']):.2e}, max {rm['polished'].max():.2e} "
          f"(goal <= {GOALS['rmse_polished']:g}); QuantLib: median {np.median(rm['quantlib']):.2e}, "
          f"max {rm['quantlib'].max():.2e}")
    med = ident.median()
    print("identifiability: standard error per parameter for a 1e-4 price error per quote, as a "
          "share of its range (median over surfaces): "
          + ", ".join(f"{k} {med[k]:.2%}" for k in PARAMS))
    weak = [k for k in PARAMS if med[k] > 0.05]
    print("not identifiable from these quotes (standard error > 5% of the range): "
          + (", ".join(weak) if weak else "none"))
    pairs = [(a, b, corr.loc[a, b]) for i, a in enumerate(PARAMS) for b in PARAMS[i + 1:]
             if abs(corr.loc[a, b]) >= 0.8]
    print("parameters whose errors move together (median correlation, |c| >= 0.8): "
          + (", ".join(f"{a}-{b} {c:+.2f}" for a, b, c in pairs) if pairs else "none"))
    if args.json:
        out: dict[str, Any] = {
            "surfaces": args.surfaces, "time_network_s": t_net, "time_polish_s": polish_time,
            "time_quantlib_s": t_ql, "speedup": t_ql / t_net,
            "rmse": {k: {"median": float(np.median(v)), "max": float(v.max())} for k, v in rm.items()},
            "param_errors": errs, "identifiability": {k: float(med[k]) for k in PARAMS},
            "correlation": corr.to_dict()}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
