"""The ``nnfin`` command line: parse, call the Python API, print. Nothing else lives here.

Every command's bad input surfaces as an :class:`nnfin.errors.NNFinError`; :func:`main`
prints it as one line and exits with code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from nnfin.errors import NNFinError

app = typer.Typer(
    name="nnfin",
    help="Train neural-network function approximators (the lecture's workflow, and finance).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _register() -> None:
    """Attach the commands; each lives in its own module under ``nnfin.commands``."""
    from nnfin.commands import data as data_cmd
    from nnfin.commands import explain as explain_cmd
    from nnfin.commands import fit as fit_cmd
    from nnfin.commands import predict as predict_cmd
    from nnfin.commands import report as report_cmd
    from nnfin.commands import runs as runs_cmd
    from nnfin.commands import tune as tune_cmd

    app.command("fit")(fit_cmd.fit)
    app.command("inspect")(fit_cmd.inspect)
    app.command("resume")(fit_cmd.resume)
    app.command("explain")(explain_cmd.explain)
    app.command("data")(data_cmd.data)
    app.command("report")(report_cmd.report)
    app.command("cv")(tune_cmd.cv)
    app.command("tune")(tune_cmd.tune)
    app.command("lr-find")(tune_cmd.lr_find)
    app.add_typer(runs_cmd.app, name="runs")
    app.command("predict")(predict_cmd.predict)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nnfin`` console script: bad input is one line and exit code 2."""
    _register()
    try:
        app(args=argv)  # standalone: usage errors exit 2, Ctrl-C exits 130 via click
    except NNFinError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
