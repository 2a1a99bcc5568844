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
    from nnfin.commands import calibrate as calibrate_cmd
    from nnfin.commands import data as data_cmd
    from nnfin.commands import explain as explain_cmd
    from nnfin.commands import export as export_cmd
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
    app.command("calibrate")(calibrate_cmd.calibrate)
    app.command("export")(export_cmd.export)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nnfin`` console script: bad input is one line and exit code 2."""
    _register()
    try:
        code = app(args=argv, standalone_mode=False, prog_name="nnfin")
    except NNFinError as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # Ctrl-C at a prompt
            sys.exit(130)
        if not hasattr(exc, "format_message") or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        message = " ".join(exc.format_message().split()).replace("Value error, ", "")
        if not message:  # no command given: the help was printed, as nnfin with no arguments does
            sys.exit(0)
        # a usage error (unknown option, bad value for an option): one line, as every error
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _error(message + where, exc.exit_code or 2)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True)
    sys.exit(code)
