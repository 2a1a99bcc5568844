"""``nnfin explain``: walk a backward graph step by step, as the lecture's slides do.

Three modes:

* ``nnfin explain`` - the lecture's ``y = cos(w x + b)`` with x = 0.5, w = 1,
  b = pi/2 - 0.5 (override with ``--set x=2 --param w=1 --param b=3``);
* ``nnfin explain "W @ x + b" --set x=[1,2] --param W=[[1,2],[3,4]] --param b=[0,1]`` -
  a safe expression (never ``eval``-ed); a non-scalar result is summed and a note says so;
* ``nnfin explain --model runs/my-run --set x=1.5`` - one prediction of a trained run.

A picture of the graph is written only when ``--out graph.png`` (or ``.svg``, ``.dot``)
is given; an existing file needs ``--force``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from nnfin.errors import ConfigError


def _assignments(items: list[str] | None, option: str) -> dict[str, str]:
    from nnfin.explain.expr import parse_assignment

    out: dict[str, str] = {}
    for item in items or []:
        name, value = parse_assignment(item, option)
        if name in out:
            raise ConfigError(f"{option} {item!r}: {name!r} is given twice")
        out[name] = value
    return out


def explain(
    expression: str | None = typer.Argument(
        None, help="Expression such as 'cos(w*x + b)'; none: the lecture's example."),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", metavar="NAME=VALUE",
        help="An input without gradient, e.g. --set x=0.5 or --set x=[1,2,3]; with --model: "
             "a feature value in data units (repeatable)."),
    param: list[str] | None = typer.Option(
        None, "--param", "-p", metavar="NAME=VALUE",
        help="A parameter (requires_grad=True), e.g. --param w=1 or --param b=pi/2-0.5."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Run folder: explain one prediction of its network."),
    target: str | None = typer.Option(
        None, "--target", help="With --model: which output to explain (default: the first)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the graph picture here (.png, .svg or .dot)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    renderer: str = typer.Option(
        "auto", "--renderer", help="auto (Graphviz dot if on PATH, else matplotlib) | dot | "
                                   "matplotlib"),
    max_steps: int = typer.Option(
        40, "--max-steps", help="Show at most this many backward steps (and graph nodes)."),
) -> None:
    """Walk the backward graph node by node (grad_fn, next_functions) and check it.

    Example: nnfin explain "sigmoid(w*x + b)" --set x=2 --param w=0.5 --param b=0
    """
    from nnfin.explain import (
        explain_expression,
        explain_run,
        lecture_example,
        show,
        write_graph,
    )
    from nnfin.explain.graph import RENDERERS, check_out_path

    if renderer not in RENDERERS:
        from nnfin.errors import one_of

        raise ConfigError(f"--renderer {renderer!r}: {one_of(renderer, RENDERERS)}")
    if max_steps < 1:
        raise ConfigError(f"--max-steps {max_steps!r} must be >= 1")
    if out is not None:
        check_out_path(out, force)  # fail before any work
    inputs = _assignments(set_, "--set")
    params = _assignments(param, "--param")
    if model is not None:
        if expression is not None:
            raise ConfigError(f"give either an expression ({expression!r}) or --model, not both")
        if params:
            raise ConfigError(f"--param {next(iter(params))!r}: not used with --model "
                              f"(its parameters are the network's); use --set for features")
        ex = explain_run(model, inputs, target=target)
    else:
        if target is not None:
            raise ConfigError(f"--target {target!r} needs --model")
        if expression is None:
            extra = [n for n in inputs if n != "x"] + [n for n in params if n not in ("w", "b")]
            if extra:
                raise ConfigError(
                    f"variable {extra[0]!r}: the lecture's example cos(w*x + b) takes "
                    f"--set x=..., --param w=... and --param b=... (or give an expression)")
            ex = lecture_example(**inputs, **params)
        else:
            ex = explain_expression(expression, inputs, params)
    console = Console(highlight=False)
    show(ex, console, max_steps=max_steps)
    if out is not None:
        used = write_graph(ex.trace, out, renderer=renderer, force=force, max_nodes=max_steps)
        console.print(f"graph written to {escape(str(out))} ({used})")
