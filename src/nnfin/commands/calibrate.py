"""``nnfin calibrate RUN QUOTES -o FITTED.csv``: model parameters from quotes, through a surrogate.

QUOTES (CSV or Parquet) holds the surrogate's market inputs (Heston recipe: ``moneyness``,
``tau``, ``r``), the target column named as in ``model.json`` (``price`` or ``iv``) and an
optional ``surface`` column; the run's inputs missing from QUOTES are the parameters. FITTED
has one row per surface: ``surface``, one column per parameter, ``rmse`` (target units),
``iterations`` and ``time_s``. ``--polish`` refines each surface with the exact pricer (Heston:
COS) and keeps the network's answer in ``network_*`` columns.

    nnfin calibrate runs/heston examples/finance/heston_quotes.csv -o fitted.csv
    nnfin calibrate runs/heston quotes.parquet -o fitted.parquet --polish --force
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from nnfin.finance.calibration_options import DEFAULTS

console = Console(highlight=False, soft_wrap=True)


def fitted_table(fitted, parameters: list[str], *, limit: int = 10) -> Table:
    """The first ``limit`` surfaces: parameters and RMSE (and, polished, the RMSE of the exact
    pricer at the network's parameters)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    cols = [("surface", "surface"), *((p, p) for p in parameters), ("rmse", "rmse")]
    if "network_rmse_exact" in fitted:
        cols.append(("network's", "network_rmse_exact"))
    for label, _ in cols:
        table.add_column(label, justify="left" if label == "surface" else "right", no_wrap=True)
    for row in fitted.head(limit).to_dict(orient="records"):
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                        for _, c in cols))
    return table


def calibrate(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder of a price or implied-vol "
                                   "surrogate."),
    quotes: Path = typer.Argument(..., metavar="QUOTES", help="CSV or Parquet file of quotes."),
    out: Path = typer.Option(..., "--out", "-o", help="FITTED file: .csv or .parquet."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite FITTED if it exists."),
    polish: bool = typer.Option(False, "--polish", help="Refine each surface with the exact pricer "
                                "(scipy least_squares from the network's answer)."),
    method: str = typer.Option(DEFAULTS["method"], "--method",
                               help="lm (batched Levenberg-Marquardt) | adam-lbfgs (Adam, then "
                               "L-BFGS with a closure)."),
    iterations: int = typer.Option(DEFAULTS["iterations"], "--iterations", min=0,
                                   help="lm: most Levenberg-Marquardt steps on all quotes."),
    coarse: int = typer.Option(DEFAULTS["coarse"], "--coarse", min=0,
                               help="lm: steps on up to 12 quotes per surface first (0: none)."),
    starts: int = typer.Option(DEFAULTS["starts"], "--starts", min=1,
                               help="Starts optimized per surface (the best Latin-hypercube points)."),
    candidates: int = typer.Option(DEFAULTS["candidates"], "--candidates", min=1,
                                   help="Latin-hypercube points scored to choose the starts."),
    adam_steps: int = typer.Option(DEFAULTS["adam_steps"], "--adam-steps", min=0,
                                   help="adam-lbfgs: Adam steps before L-BFGS."),
    lbfgs_steps: int = typer.Option(DEFAULTS["lbfgs_steps"], "--lbfgs-steps", min=0,
                                    help="adam-lbfgs: L-BFGS iterations after Adam."),
    seed: int = typer.Option(DEFAULTS["seed"], "--seed", min=0, help="Seed of the Latin hypercube."),
) -> None:
    """Calibrate the parameters a surrogate takes to quoted surfaces (all surfaces at once)."""
    from nnfin.app.calibrate import calibrate as calibrate_app
    from nnfin.app.calibrate import summary

    result = calibrate_app(run_dir, quotes, out=out, force=force, polish=polish, method=method,
                           iterations=iterations, coarse=coarse, starts=starts,
                           candidates=candidates, adam_steps=adam_steps, lbfgs_steps=lbfgs_steps,
                           seed=seed)
    s = summary(result)
    console.print(f"calibrated {s['surfaces']} surface(s): {', '.join(result.parameters)} from "
                  f"{', '.join(result.market)} -> {result.target} (run: {run_dir})")
    console.print(f"network: {s['time_s']:.3g} s for all surfaces, RMSE median "
                  f"{s['network_rmse_median']:.3g}, max {s['network_rmse_max']:.3g} "
                  f"({result.target} units)")
    if result.polish_time_s is not None:
        console.print(f"polish (exact pricer): {s['polish_time_s']:.3g} s, RMSE median "
                      f"{s['rmse_median']:.3g}, max {s['rmse_max']:.3g}; the exact pricer at the "
                      f"network's parameters: RMSE median {s['network_rmse_exact_median']:.3g}")
    console.print(fitted_table(result.fitted, result.parameters))
    if result.polish_time_s is not None:
        console.print("network's: RMSE of the exact pricer at the network's parameters; the "
                      "network's own columns are network_* in FITTED")
    if len(result.fitted) > 10:
        console.print(f"... {len(result.fitted) - 10} more surface(s) in {out}")
    console.print(f"wrote {len(result.fitted)} rows to {out}")
