"""Show an :class:`~nnfin.explain.core.Explanation` as rich tables.

Tensors are shown in full when short (``-0.5``, ``[1, 2, 3]``) and as
``shape [6, 6], norm 0.43`` otherwise, so the tables stay readable for networks too.

>>> import io
>>> from rich.console import Console
>>> from nnfin.explain.core import lecture_example
>>> console = Console(width=100, file=io.StringIO())
>>> show(lecture_example(), console)
>>> "dy/dw = -0.5" in console.file.getvalue()
True
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nnfin.explain.core import Explanation
from nnfin.explain.trace import Step, Trace

__all__ = ["format_tensor", "show", "step_rows"]

MAX_ELEMENTS = 6
MAX_CHARS = 40


def format_tensor(
    t: torch.Tensor | None, max_elements: int = MAX_ELEMENTS, max_chars: int = MAX_CHARS
) -> str:
    """A short text for a tensor: ``-0.5``, ``[1, 2, 3]`` or ``shape [6, 6], norm 1.2``.

    >>> format_tensor(torch.tensor(-1.0)), format_tensor(torch.tensor([[1.0, 2.5]]))
    ('-1', '[[1, 2.5]]')
    >>> format_tensor(torch.ones(3, 3))
    'shape [3, 3], norm 3'
    """
    if t is None:
        return "None"
    t = t.detach()
    if t.numel() == 1 and t.dim() == 0:
        return _num(float(t))
    if t.numel() <= max_elements:
        text = _nested(t.double().cpu().tolist())
        if len(text) <= max_chars:
            return text
    return f"shape {list(t.shape)}, norm {float(t.double().norm()):.4g}"


def _num(v: float) -> str:
    return f"{v:.4g}"


def _nested(v: object) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(e) for e in v) + "]"
    return _num(float(v))  # type: ignore[arg-type]


def step_rows(tr: Trace, max_steps: int | None = None) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(#, node, computes, upstream gradient, gradients produced)`` of the walk.

    >>> from nnfin.explain.trace import trace
    >>> w = torch.tensor(3.0, requires_grad=True)
    >>> step_rows(trace(w * w, names={"w": w}))[0]
    ('0', 'MulBackward0', 'y', 'dy/dy = 1', 'dy/dw = 3\\ndy/dw = 3')
    """
    steps = tr.steps if max_steps is None else tr.steps[:max_steps]
    return [(str(s.index), s.node, s.output, _upstream_cell(tr, s), _produced_cell(tr, s))
            for s in steps]


def _upstream_cell(tr: Trace, s: Step) -> str:
    if len(s.upstream) == 1:
        text = f"{tr.grad_label(s.output)} = {format_tensor(s.upstream[0])}"
    else:
        parts = [format_tensor(g) for g in s.upstream]
        text = f"{tr.grad_label(s.output)} = ({', '.join(parts)})"
    if s.contributions > 1:
        text += f"\n(sum of {s.contributions} paths)"
    return text


def _produced_cell(tr: Trace, s: Step) -> str:
    if s.leaf is not None:
        return f"-> {s.leaf}.grad"
    lines = []
    for g in s.produced:
        if g.next_index is None:
            lines.append(f"None {g.target}")
        else:
            lines.append(f"{tr.grad_label(g.target)} = {format_tensor(g.grad)}")
    return "\n".join(lines) if lines else "(no inputs)"


def _forward_table(ex: Explanation) -> Table:
    table = Table()
    table.add_column("name", overflow="fold")
    table.add_column("computed as", overflow="fold")
    table.add_column("value", overflow="fold")
    for row in ex.forward:
        table.add_row(escape(row.name), escape(row.formula), escape(format_tensor(row.value)))
    return table


def _steps_table(ex: Explanation, max_steps: int | None) -> Table:
    tr = ex.trace
    table = Table()
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("node", overflow="fold")
    table.add_column("computes", overflow="fold")
    table.add_column("upstream gradient", overflow="fold")
    table.add_column("gradients it produced", overflow="fold")
    rows = step_rows(tr, max_steps)
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    if len(tr.steps) > len(rows):
        table.add_row("...", f"{len(tr.steps) - len(rows)} more steps", "", "", "", style="dim")
    return table


def _leaf_table(ex: Explanation) -> Table:
    tr = ex.trace
    table = Table()
    table.add_column("leaf", overflow="fold")
    table.add_column("walk", overflow="fold")
    table.add_column("autograd", overflow="fold")
    if ex.closed_form:
        table.add_column("closed form", overflow="fold")
    table.add_column("agree", no_wrap=True)
    for name, got in tr.leaf_grads.items():
        ref = tr.reference_grads.get(name)
        ok = ref is not None and torch.allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
        cells = [tr.grad_label(name), format_tensor(got), format_tensor(ref)]
        if ex.closed_form:
            cf = ex.closed_form.get(name)
            cells.append(format_tensor(cf) if cf is not None else "")
        cells.append("yes" if ok else "NO")
        table.add_row(*(escape(c) for c in cells), style=None if ok else "red")
    return table


def _paths(tr: Trace, console: Console, max_steps: int | None) -> None:
    steps = tr.steps if max_steps is None else tr.steps[:max_steps]
    console.print(f"How each node is reached from {tr.output}, and the leaves below it:")
    for s in steps:
        leaves = ", ".join(s.leaves) if len(s.leaves) <= 4 else f"{len(s.leaves)} leaves"
        console.print(f"  {s.index:>2} {escape(s.access)}  [dim]-> {escape(leaves)}[/dim]",
                      soft_wrap=True)


def show(ex: Explanation, console: Console, max_steps: int | None = 40) -> None:
    """Print the forward values, the walk, the paths, the leaf check and the notes.

    ``max_steps`` limits the rows of the walk (the rest is counted in one row).
    """
    tr = ex.trace
    console.print(f"[bold]{escape(ex.title)}[/bold]")
    console.print("Forward pass")
    console.print(_forward_table(ex))
    console.print("Backward pass, node by node: each node is called with its upstream gradient")
    console.print(_steps_table(ex, max_steps))
    _paths(tr, console, max_steps)
    console.print("Leaf gradients: the walk against torch.autograd.grad")
    console.print(_leaf_table(ex))
    if tr.agree:
        console.print(f"[green]The walk agrees with autograd[/green] "
                      f"(largest difference {tr.max_abs_diff:.3g}).")
    else:
        console.print(f"[red]The walk does NOT agree with autograd[/red] "
                      f"(largest difference {tr.max_abs_diff:.3g}).")
    if ex.closed_form:
        word = "agrees" if ex.closed_form_agrees else "does NOT agree"
        console.print(f"The closed form {word} with the walk.")
    for note in ex.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
