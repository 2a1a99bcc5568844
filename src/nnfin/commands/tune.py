"""``nnfin cv``, ``nnfin tune`` and ``nnfin lr-find``."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nnfin.commands.fit import SetOption, report

console = Console(highlight=False)

FoldsOption = typer.Option(None, "--folds", "-k", help="K of the K-fold cross-validation (\\[tune] folds).")
RunDirOption = typer.Option(None, "--run-dir", "-o", help="Run folder (an existing search is continued).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar.")
DeviceOption = typer.Option(None, "--device", help="auto | cpu | cuda | mps")


def _g(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def cv(
    config: Path | None = typer.Argument(None, help="TOML config; none: the lecture's network."),
    folds: int | None = FoldsOption,
    set_: list[str] | None = SetOption,
    run_dir: str | None = typer.Option(None, "--run-dir", "-o", help="Run folder to create."),
    device: str | None = DeviceOption,
    force: bool = typer.Option(False, "--force", help="Replace a previous nnfin cv run in the "
                               "--run-dir folder (any other non-empty folder is refused)."),
    quiet: bool = QuietOption,
) -> None:
    """K-fold cross-validation of one configuration: per-fold and mean ± std metrics."""
    from nnfin.app.cv import cross_validate
    from nnfin.app.runs_table import print_table

    res = cross_validate(config, folds=folds, overrides=list(set_ or []), run_dir=run_dir,
                         device=device, force=force, progress=not quiet, console=console)
    print_table(console, cv_table(res, console.width))
    diverged = res.diverged_folds
    everything = len(diverged) == len(res.folds)
    k = len(res.folds)
    if not diverged:
        console.print(f"{res.metric}: {res.mean:.4g} ± {res.std:.2g} over {k} folds")
    elif not everything:
        named = ", ".join(map(str, diverged))
        console.print(f"{res.metric}: {res.finite_mean:.4g} ± {res.finite_std:.2g} over the "
                      f"{k - len(diverged)} of {k} folds that did not diverge (*: fold(s) {named} "
                      "left out)")
    if res.dir is not None:
        console.print(f"run folder: {res.dir} (cv.csv, cv.json)")
    if diverged:
        which = "every fold" if everything else f"fold(s) {', '.join(map(str, diverged))} of {k}"
        console.print(f"[red]diverged:[/red] {which} diverged (loss became NaN or infinite; lr = "
                      f"{res.config.optim.lr:g}); try a smaller \\[optim] lr")
        raise typer.Exit(1)


def cv_table(res, width: int = 80) -> Table:
    """Per-fold held-out metrics and their mean ± std, fitted to ``width`` columns: loss,
    RMSE, time and n are left out, in that order, where they do not fit."""
    from nnfin.app.runs_table import Col, fitted_table

    cols = {k: [] for k in ("fold", "mse", "rmse", "mae", "r2", "loss", "epochs", "status", "n", "time")}

    def row(*values: str) -> None:
        for key, value in zip(cols, values, strict=True):
            cols[key].append(value)

    diverged = res.diverged_folds
    for f in res.folds:
        m = f.metrics
        if f.fold + 1 in diverged:  # no metrics to speak of: inf or NaN
            row(str(f.fold + 1), *["-"] * 5, str(f.epochs), "[red]diverged[/red]", str(f.n_held_out),
                f"{f.time_s:.2f}")
        else:
            row(str(f.fold + 1), _g(m["mse"]), _g(m["rmse"]), _g(m["mae"]), _g(m["r2"]), _g(m["loss"]),
                str(f.epochs), escape(f.status), str(f.n_held_out), f"{f.time_s:.2f}")
    s = res.summary()  # means and stds over the folds that did not diverge
    keys = ("val_mse", "val_rmse", "val_mae", "val_r2", "val_loss")
    everything = len(diverged) == len(res.folds)
    star = "*" if diverged and not everything else ""
    row(f"mean{star}", *(("diverged" if everything else _g(s[k]["mean"])) for k in keys),
        "", "", "", f"{res.time_s:.2f}")
    row(f"± std{star}", *(("-" if everything else _g(s[k]["std"])) for k in keys), "", "", "", "")
    columns = [Col("fold", cols["fold"], numeric=False, floor=6), Col("MSE", cols["mse"]),
               Col("RMSE", cols["rmse"], drop=3), Col("MAE", cols["mae"]), Col("R²", cols["r2"]),
               Col("loss", cols["loss"], drop=4), Col("epochs", cols["epochs"]),
               Col("status", cols["status"], numeric=False, floor=8), Col("n", cols["n"], drop=1),
               Col("time\ns", cols["time"], drop=2)]
    return fitted_table(columns, width, sections=(len(res.folds),),
                        title=f"{len(res.folds)}-fold cross-validation (held-out folds, data units)")


def tune(
    config: Path | None = typer.Argument(None, help="TOML config with a \\[tune] table."),
    set_: list[str] | None = SetOption,
    run_dir: str | None = RunDirOption,
    storage: str | None = typer.Option(None, "--storage", help="sqlite | sqlite:///f.db | "
                                       "postgresql://user:pw@host/db | memory (\\[tune] storage)."),
    study: str | None = typer.Option(None, "--study", help="Study name shared by workers (\\[tune] study)."),
    trials: int | None = typer.Option(None, "--trials", "-n", help="Trials to complete (\\[tune] trials)."),
    folds: int | None = FoldsOption,
    strategy: str | None = typer.Option(None, "--strategy", help="grid | random | bayes."),
    worker: bool = typer.Option(False, "--worker", help="Only run trials of a shared study; "
                                "report and refit are left to a plain nnfin tune."),
    device: str | None = DeviceOption,
    top: int = typer.Option(10, "--top", min=1, help="Rows of the ranking to show."),
    quiet: bool = QuietOption,
) -> None:
    """Search \\[tune.space] by K-fold CV (grid, random or Bayesian), then refit and test the best."""
    from nnfin.app.runs_table import print_table
    from nnfin.app.tune import tune as api_tune

    res = api_tune(config, overrides=list(set_ or []), run_dir=run_dir, storage=storage, study=study,
                   trials=trials, folds=folds, strategy=strategy, device=device, worker=worker,
                   progress=not quiet, console=console)
    for note in res.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    print_table(console, ranking_table(res, top, console.width))
    done = f"{res.completed} of {res.budget} trials complete"
    if res.interrupted:
        console.print(f"interrupted: {done}; they are kept in {escape(res.storage)}; "
                      "rerun the same command to continue")
        raise typer.Exit(130)
    if res.best_params is not None:
        shown = ", ".join(f"{k}={v!r}" for k, v in res.best_params.items())
        console.print(f"best: {escape(shown)}   {res.metric} {res.best_value:.4g}   ({done})")
    if res.dir is not None:
        console.print(f"search outputs: {res.dir / 'tune'} (trials.csv, ranking.csv, best.toml, plots/)")
    if res.run is not None:
        console.print("[bold]refit of the best configuration, tested once:[/bold]")
        report(res.run)


def _param(v) -> str:
    """A parameter's value in the ranking: numbers as ``.4g``, anything else as text."""
    if isinstance(v, float):
        return _g(v)
    return escape(str(v))


def ranking_table(res, top: int, width: int = 80) -> Table:
    """The best ``top`` candidates by mean CV metric, with std, folds and time, fitted to
    ``width`` columns: a parameter is headed by its last key where that is unambiguous
    (``optim.lr``: ``lr``); folds and state get a column only where they differ from row to row;
    rank and time are left out, in that order, where the table does not fit."""
    from nnfin.app.runs_table import Col, fitted_table

    df = res.ranking.head(top)
    params = [c for c in df.columns if c not in ("rank", "trial", "state", "mean", "std", "folds",
                                                 "time_s", "params")]
    short = [p.rsplit(".", 1)[-1] for p in params]
    heads = short if len(set(short)) == len(short) else params
    columns = [Col("#", [str(r) for r in df["rank"]], drop=2), Col("trial", [str(t) for t in df["trial"]])]
    for p, head in zip(params, heads, strict=True):
        values = list(df[p])
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        columns.append(Col(head, [_param(v) for v in values], numeric=numeric, floor=10))
    columns += [Col("mean", [_g(v) for v in df["mean"]]), Col("± std", [_g(v) for v in df["std"]])]
    folds = sorted(set(df["folds"]))
    if len(folds) > 1:
        columns.append(Col("folds", [str(f) for f in df["folds"]]))
    columns.append(Col("time\ns", [f"{t:.2f}" for t in df["time_s"]], drop=1))
    if (df["state"] != "COMPLETE").any():
        columns.append(Col("state", [s.lower() for s in df["state"]], numeric=False))
    over = f" over {folds[0]} folds" if len(folds) == 1 else " over folds"
    return fitted_table(columns, width, title=f"ranking by {res.metric} (mean ± std{over})")


def lr_find(
    config: Path | None = typer.Argument(None, help="TOML config; none: the lecture's network."),
    set_: list[str] | None = SetOption,
    start: float = typer.Option(1e-7, "--start", help="First learning rate."),
    end: float = typer.Option(10.0, "--end", help="Last learning rate."),
    steps: int = typer.Option(100, "--steps", help="Mini-batch steps (exponentially spaced lr)."),
    plot: Path | None = typer.Option(None, "--plot", help="Where to save the plot "
                                     "(default runs/lr-find-<time>.png; a CSV goes beside it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing plot and its CSV."),
) -> None:
    """Learning-rate range test: loss against an exponentially growing lr; suggests an lr."""
    from nnfin.app.lr_find import lr_find as api_lr_find

    res = api_lr_find(config, overrides=list(set_ or []), start=start, end=end, steps=steps, plot=plot,
                      force=force)
    console.print(f"range test: {len(res.lrs)} steps, lr {start:g} -> {res.lrs[-1]:.3g}; {res.stop_reason}")
    console.print(f"suggested lr: {res.suggestion:.2g} (steepest descent of the smoothed loss); "
                  f"min/10: {res.min_div_10:.2g}")
    console.print(f"use it with: --set optim.lr={res.suggestion:.2g}")
    if res.plot is not None:
        console.print(f"plot: {res.plot} (data: {res.plot.with_suffix('.csv')})")
