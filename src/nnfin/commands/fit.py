"""``nnfin fit`` and ``nnfin inspect``."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)

SetOption = typer.Option(
    None, "--set", "-s", metavar="KEY=VALUE",
    help="Override a config key, e.g. --set optim.lr=0.001 (repeatable).",
)


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _r2(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.6f}"


def metrics_table(metrics: dict, width: int = 80) -> Table:
    """Each split's metrics, fitted to ``width`` columns: n and max |err| are left out, in that
    order, where they do not fit."""
    from nnfin.app.runs_table import Col, fitted_table

    rows = [(split, metrics[split]) for split in ("train", "val", "test") if metrics.get(split)]
    columns = [Col("split", [split for split, _ in rows], numeric=False),
               *(Col(head, [_fmt(m[key]) for _, m in rows], drop=drop) for head, key, drop in
                 (("MSE", "mse", 0), ("RMSE", "rmse", 0), ("MAE", "mae", 0))),
               Col("R²", [_r2(m["r2"]) for _, m in rows]),
               Col("max |err|", [_fmt(m["max_abs_error"]) for _, m in rows], drop=1),
               Col("n", [str(m["n"]) for _, m in rows], drop=2)]
    return fitted_table(columns, width, title="metrics (data units)")


def fit(
    config: Path | None = typer.Argument(None, help="TOML config; none: the lecture's network."),
    set_: list[str] | None = SetOption,
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    run_dir: str | None = typer.Option(None, "--run-dir", "-o", help="Run folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace a previous nnfin fit run in the "
                               "--run-dir folder (any other non-empty folder is refused)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    tensorboard: bool = typer.Option(False, "--tensorboard",
                                     help="Write TensorBoard logs into <run>/tensorboard."),
    distributed: bool = typer.Option(False, "--distributed", help="DDP; launch with torchrun."),
    compile_: bool = typer.Option(False, "--compile", help="Train through torch.compile."),
) -> None:
    """Train a model and write a run folder (config, metrics, history, weights, plots)."""
    from nnfin.app.fit import fit as api_fit

    run = api_fit(config, overrides=list(set_ or []), run_dir=run_dir, device=device, force=force,
                  tensorboard=tensorboard, compile=compile_, distributed=distributed,
                  progress=not quiet, console=console)
    report(run)


def resume(
    run_dir: Path = typer.Argument(..., help="Run folder to continue."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="New total number of epochs."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="New total steps."),
    set_: list[str] | None = SetOption,
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    tensorboard: bool = typer.Option(False, "--tensorboard",
                                     help="Write TensorBoard logs into <run>/tensorboard."),
    distributed: bool = typer.Option(False, "--distributed", help="DDP; launch with torchrun."),
    compile_: bool = typer.Option(False, "--compile", help="Train through torch.compile."),
) -> None:
    """Continue a run from its last checkpoint (exactly where it stopped)."""
    import warnings

    from nnfin.app.resume import resume as api_resume

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = api_resume(run_dir, epochs=epochs, iterations=iterations, overrides=list(set_ or []),
                         device=device, tensorboard=tensorboard, compile=compile_,
                         distributed=distributed, progress=not quiet, console=console)
    for w in caught:
        console.print(f"[yellow]note:[/yellow] {escape(str(w.message))}")
    report(run)


def report(run) -> None:
    """Print the result of a fit and exit 1 (diverged) or 130 (interrupted) when needed."""
    from nnfin import distributed

    if distributed.active():
        import torch.distributed as dist

        dist.barrier()
        main = distributed.is_main()
        dist.destroy_process_group()
        if not main:  # rank 0 reports for everyone
            return
    m = run.metrics
    if m["status"] == "diverged":
        console.print(f"[red]diverged:[/red] {escape(m['stop_reason'])}")
        console.print(f"run folder (no model saved): {run.dir}")
        raise typer.Exit(1)
    from nnfin.app.runs_table import print_table

    print_table(console, metrics_table(m, console.width))
    console.print(f"status: {m['status']}" + (f" ({escape(m['stop_reason'])})" if m["stop_reason"] else "")
                  + f"   epochs: {m['epochs']}   steps: {m['steps']}   time: {m['time_s']:.2f} s"
                  + f"   device: {m['device']} ({m['dtype']})")
    poly = m.get("polynomial")
    if poly:
        console.print(f"fitted:        {poly['formula']}")
        console.print(f"least squares: {poly['lstsq_formula']}   (exact optimum, torch.linalg.lstsq)")
        console.print(f"sum of squares: fitted {poly['sse']:.6g}, optimum {poly['lstsq_sse']:.6g}, "
                      f"relative gap {poly['relative_gap']:.3g}")
    if run.dir is not None:
        console.print(f"run folder: {run.dir}")
        plots = sorted(str(p) for p in (Path(run.dir) / "plots").glob("*.png"))
        if plots:
            console.print("plots: " + ", ".join(plots))
        if (Path(run.dir) / "tensorboard").is_dir():
            console.print(f"tensorboard: tensorboard --logdir {Path(run.dir) / 'tensorboard'}")
    if m["status"] == "interrupted":
        console.print(f"interrupted; continue with: nnfin resume {run.dir}")
        raise typer.Exit(130)


def _array(t) -> str:
    import numpy as np

    return np.array2string(t.double().cpu().numpy(), precision=4, threshold=10**9,
                           max_line_width=100)


def inspect(
    run_dir: Path = typer.Argument(..., help="Run folder written by nnfin fit."),
    values: bool = typer.Option(False, "--values", help="Print every value, however large."),
) -> None:
    """Show parameters and their gradients (names, shapes, norms, values of small tensors)."""
    from safetensors.torch import load_file

    from nnfin.errors import FileFormatError
    from nnfin.runs import load_run

    if Path(run_dir).is_file():
        raise FileFormatError(f"{str(run_dir)!r} is a file, not a run folder: nnfin inspect takes a "
                              "run folder written by nnfin fit; nnfin predict FILE INPUT -o OUT "
                              "reads model files (.pth, .pt, ...)")
    run = load_run(run_dir)
    grad_file = Path(run_dir) / "gradients.safetensors"
    try:
        grads = load_file(str(grad_file)) if grad_file.exists() else {}
    except Exception as exc:  # safetensors raises several types for bad files; none runs code
        raise FileFormatError(f"gradients file {str(grad_file)!r} cannot be read: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    table = Table(title=f"parameters of {run.config.model.kind} ({run_dir})")
    for col in ("name", "shape", "numel", "norm", "grad norm"):
        table.add_column(col, justify="right" if col in ("numel", "norm", "grad norm") else "left")
    limit = None if values else 12
    details = []
    for name, p in run.model.named_parameters():
        p = p.detach()
        g = grads.get(name)
        table.add_row(name, str(tuple(p.shape)), str(p.numel()), f"{float(p.norm()):.4g}",
                      "-" if g is None else f"{float(g.norm()):.4g}")
        if limit is None or p.numel() <= limit:
            details.append((name, p.detach(), g))
    console.print(table)
    for name, p, g in details:
        console.print(f"[bold]{name}[/bold] =\n{_array(p)}")
        if g is not None:
            console.print(f"[dim]{name}.grad[/dim] =\n{_array(g)}")
    console.print("gradients: of the training loss at the final weights"
                  if grads else "no gradients.safetensors in this run")
