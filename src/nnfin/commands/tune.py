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

    res = cross_validate(config, folds=folds, overrides=list(set_ or []), run_dir=run_dir,
                         device=device, force=force, progress=not quiet, console=console)
    table = Table(title=f"{len(res.folds)}-fold cross-validation (held-out folds, data units)")
    for col in ("fold", "MSE", "RMSE", "MAE", "R²", "loss", "epochs", "status", "n", "time s"):
        table.add_column(col, justify="left" if col in ("fold", "status") else "right")
    diverged = res.diverged_folds
    for f in res.folds:
        m = f.metrics
        if f.fold + 1 in diverged:  # no metrics to speak of: inf or NaN
            table.add_row(str(f.fold + 1), *["-"] * 5, str(f.epochs), "[red]diverged[/red]",
                          str(f.n_held_out), f"{f.time_s:.2f}")
            continue
        table.add_row(str(f.fold + 1), _g(m["mse"]), _g(m["rmse"]), _g(m["mae"]), _g(m["r2"]),
                      _g(m["loss"]), str(f.epochs), f.status, str(f.n_held_out), f"{f.time_s:.2f}")
    s = res.summary()  # means and stds over the folds that did not diverge
    keys = ("val_mse", "val_rmse", "val_mae", "val_r2", "val_loss")
    everything = len(diverged) == len(res.folds)
    table.add_section()
    star = "*" if diverged and not everything else ""
    table.add_row(f"mean{star}", *(("diverged" if everything else _g(s[k]["mean"])) for k in keys),
                  "", "", "", f"{res.time_s:.2f}")
    table.add_row(f"± std{star}",
                  *(("-" if everything else _g(s[k]["std"])) for k in keys), "", "", "", "")
    console.print(table)
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
    from nnfin.app.tune import tune as api_tune

    res = api_tune(config, overrides=list(set_ or []), run_dir=run_dir, storage=storage, study=study,
                   trials=trials, folds=folds, strategy=strategy, device=device, worker=worker,
                   progress=not quiet, console=console)
    for note in res.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    console.print(ranking_table(res, top))
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


def ranking_table(res, top: int) -> Table:
    """The best ``top`` candidates by mean CV metric, with std, folds and time."""
    df = res.ranking.head(top)
    params = [c for c in df.columns if c not in ("rank", "trial", "state", "mean", "std", "folds",
                                                 "time_s", "params")]
    table = Table(title=f"ranking by {res.metric} (mean over folds)")
    for col in ("rank", "trial", *params, "mean", "± std", "folds", "time s", "state"):
        table.add_column(col, justify="left" if col in ("state", *params) else "right")
    for _, r in df.iterrows():
        table.add_row(str(r["rank"]), str(r["trial"]), *(escape(str(r[p])) for p in params),
                      _g(r["mean"]), _g(r["std"]), str(r["folds"]), f"{r['time_s']:.2f}",
                      r["state"].lower())
    return table


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
