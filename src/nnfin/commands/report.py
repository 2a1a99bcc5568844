"""``nnfin report RUN``: the evaluation report of a finance run (prices, Greeks, implied vols).

    nnfin report runs/bs-price                 # train, test-wide, test-narrow; Greeks; plots
    nnfin report runs/iv --n 50000 --iv-n 20000
    nnfin report runs/heston --no-train        # skip regenerating the training rows

Writes ``report/metrics.csv``, ``report/report.json``, ``report/error_surface.png``,
``report/greeks.png``, ``report/hedging.csv`` and ``report/hedging.png`` (Black–Scholes price
runs) and ``report/iv_solvers.csv`` (implied-vol runs) into the run folder (or ``--out``); a
finished finance fit writes the same report.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def metrics_table(metrics, title: str = "metrics (data units)") -> Table:
    """A rich table of a report's metrics frame: one row per split and quantity."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = [("split", "split"), ("quantity", "quantity"), ("MSE", "mse"), ("RMSE", "rmse"),
               ("MAE", "mae"), ("MAPE", "mape"), ("R²", "r2"), ("max err", "max_abs_error"),
               ("n", "n")]
    for label, _ in columns:
        left = label in ("split", "quantity")
        table.add_column(label, justify="left" if left else "right", no_wrap=True,
                         min_width={"split": 11, "quantity": 8}.get(label))
    previous = None
    for row in metrics.to_dict(orient="records"):
        split = row["split"] if row["split"] != previous else ""
        previous = row["split"]
        table.add_row(split, *(_fmt(row[key]) for _, key in columns[1:]))
    return table


def iv_table(iv) -> Table:
    """Time and accuracy of the IV network, Newton and brentq on the same options."""
    table = Table(title=f"implied volatility of {int(iv['n'].iloc[0]):,} options",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("method", "time (s)", "µs/option", "speedup vs brentq", "MAE", "max |err|", "failed"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col != "method")
    for row in iv.to_dict(orient="records"):
        table.add_row(row["method"], f"{row['time_s']:.4g}", f"{row['us_per_option']:.3g}",
                      f"{row['speedup_vs_brentq']:.3g}x", _fmt(row["mae"]),
                      _fmt(row["max_abs_error"]), str(row["n_failed"]))
    return table


def hedging_table(hedging) -> Table:
    """Hedging P&L per hedge: mean, standard deviation, its ratio to the exact delta's."""
    paths = int(hedging["paths"].iloc[0])
    table = Table(title=f"delta hedging of a short book of calls, {paths:,} paths (units of S0)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("hedge", "P&L mean", "P&L std", "std / exact", "1% quantile", "99% quantile"):
        table.add_column(col, justify="left" if col == "hedge" else "right", no_wrap=True)
    for row in hedging.to_dict(orient="records"):
        table.add_row(row["hedge"], f"{row['mean']:.3g}", f"{row['std']:.4g}",
                      f"{row['std_ratio']:.4f}", f"{row['q01']:.3g}", f"{row['q99']:.3g}")
    return table


def _count(text: str) -> int:
    from nnfin.memory import parse_count

    return parse_count(text, minimum=1)


def _paths(text: str) -> int:
    from nnfin.app.report import MIN_HEDGE_PATHS
    from nnfin.memory import parse_count

    return parse_count(text, minimum=MIN_HEDGE_PATHS)


def report(
    run_dir: Path = typer.Argument(..., help="Run folder of a finance fit."),
    n: int = typer.Option(20_000, "--n", "-n", parser=_count, metavar="INTEGER",
                          help="Samples in each fresh test set (20000, or 2e4)."),
    seed: int | None = typer.Option(None, "--seed", min=0,
                                    help="Seed of test-wide (test-narrow: +1); default: data seed + 1000."),
    iv_n: int = typer.Option(20_000, "--iv-n", parser=_count, metavar="INTEGER",
                             help="Options in the IV solver comparison."),
    no_brentq: bool = typer.Option(False, "--no-brentq", help="Leave the slow brentq solver out."),
    hedge_paths: int | None = typer.Option(None, "--hedge-paths", parser=_paths, metavar="INTEGER",
                                           help="Simulated paths of the hedging test (price runs; "
                                                "default 2000 Black–Scholes, 500 Heston)."),
    hedge_seed: int = typer.Option(0, "--hedge-seed", min=0, help="Seed of the hedging paths."),
    no_hedge: bool = typer.Option(False, "--no-hedge", help="Leave the hedging test out."),
    no_train: bool = typer.Option(False, "--no-train", help="Skip the training rows (not regenerated)."),
    mape_cutoff: float = typer.Option(1e-3, "--mape-cutoff", min=0.0,
                                      help="MAPE counts only rows with |y| above this."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the figures."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Folder for the report (default <run>/report)."),
    force: bool = typer.Option(False, "--force",
                               help="Replace report files already in the --out folder (the run's own "
                               "report/ folder is nnfin's, and always rewritten)."),
) -> None:
    """Evaluate a finance run: MSE, RMSE, MAE, MAPE, R², max error; Greeks; IV solvers; hedging."""
    from nnfin.app.report import check_memory, finance_kind, write_report
    from nnfin.runs import load_run

    run = load_run(run_dir)
    finance_kind(run)
    check_memory(run, n=n, iv_n=iv_n, hedge_paths=0 if no_hedge else hedge_paths,
                 fields=("--n", "--iv-n", "--hedge-paths"))  # before anything is written
    rep = write_report(run, out=out, plots=plots, force=True if out is None else force, n=n, seed=seed,
                       train=not no_train, iv_n=iv_n, brentq=not no_brentq, mape_cutoff=mape_cutoff,
                       hedge=not no_hedge, hedge_paths=hedge_paths, hedge_seed=hedge_seed)
    print_report(rep)


def print_report(rep) -> None:
    """Print a :class:`nnfin.app.report.Report`: tables, notes and the files written."""
    # at least 100 columns: the table stays readable in pipes and narrow terminals
    wide = Console(highlight=False, soft_wrap=True, width=max(console.width, 100))
    from nnfin.app.runs_table import print_table

    print_table(wide, metrics_table(rep.metrics, title=f"{rep.kind}: metrics (data units)"))
    s = rep.settings
    console.print(f"test sets: {s['n_test']:,} samples each, seeds {s['seed_test_wide']} (wide) and "
                  f"{s['seed_test_narrow']} (narrow); MAPE: {s['mape']} (cutoff {s['mape_cutoff']:g})")
    if rep.iv is not None:
        print_table(wide, iv_table(rep.iv))
    if getattr(rep, "hedging", None) is not None:
        print_table(wide, hedging_table(rep.hedging))
    for note in rep.notes:
        console.print(f"note: {escape(note)}")
    if rep.files:
        console.print("report: " + ", ".join(escape(str(p)) for p in rep.files))
