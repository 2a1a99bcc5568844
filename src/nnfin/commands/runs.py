"""``nnfin runs``: list run folders; ``nnfin runs compare A B``: what differs between runs.

* ``nnfin runs`` / ``nnfin runs DIR --sort val`` - a table of the runs under ``DIR``
  (default ``runs/``) with status, best validation loss, test metrics and time;
* ``nnfin runs compare runs/a runs/b --out compare.png`` - the config keys that differ, the
  metrics side by side and the loss curves overlaid in one plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

console = Console(highlight=False)


class _ListByDefault(TyperGroup):
    """``nnfin runs [DIR]`` means ``nnfin runs list [DIR]``: arguments that are not a command
    name go to ``list`` (a folder named like a command: ``nnfin runs list compare``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ListByDefault, help="List run folders and compare runs.",
                  add_completion=False, pretty_exceptions_enable=False)


@app.command("list")
def list_runs(
    root: Path = typer.Argument(Path("runs"), help="Folder holding run folders."),
    sort: str = typer.Option("time", "--sort", help="time | duration | val | test | name"),
) -> None:
    """List the runs under DIR (default runs/): model, data, best val loss, test metrics, status."""
    from nnfin.app.runs_table import find_runs, print_table, runs_table, sort_runs, unreadable_lines

    rows = sort_runs(find_runs(root), sort)
    if not rows:
        console.print(f"no runs under {escape(str(root))} (a run is a folder with config.toml)")
        return
    title = f"runs in {escape(str(root))} ({len(rows)}, sorted by {sort})"
    print_table(console, runs_table(rows, title=title, width=console.width))
    for line in unreadable_lines(rows):  # listed above all the same; exit code 0
        console.print(escape(line), soft_wrap=True)


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Save the overlaid loss curves here, e.g. compare.png."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Show config differences, metrics side by side and (with --out) the loss curves overlaid."""
    from nnfin.app.runs_table import (
        check_out,
        compare_figure,
        compare_table,
        config_differences,
        metric_rows,
        save_figure,
    )
    from nnfin.errors import ConfigError
    from nnfin.runs import read_config, read_history, read_metrics

    if len(runs) < 2:
        raise ConfigError(f"runs compare needs two or more run folders, got {len(runs)}")
    if out is not None:
        check_out(out, force=force)  # refuse before printing anything
    labels = _labels(runs)
    configs = [read_config(r) for r in runs]
    diff = config_differences(configs)
    if diff:
        console.print(compare_table("config differences", labels, diff))
    else:
        console.print("configs: identical")
    console.print(compare_table("metrics (data units)", labels,
                                metric_rows([read_metrics(r) for r in runs])))
    if out is not None:
        path = save_figure(compare_figure([read_history(r) for r in runs], labels), out, force=force)
        console.print(f"loss curves: {escape(str(path))}")
    else:
        console.print("add --out compare.png to save the loss curves in one plot")


def _labels(runs: list[Path]) -> list[str]:
    """Folder names, or longer paths where two runs share a name."""
    names = [r.resolve().name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]
