"""Draw the backward graph of a :class:`~nnfin.explain.trace.Trace` as a picture.

Graphviz ``dot`` is used when it is on ``PATH``, otherwise matplotlib draws a layered
layout itself. ``.png`` and ``.svg`` give pictures, ``.dot`` the Graphviz source. An
existing file is never overwritten unless ``force=True``.

>>> import tempfile, pathlib
>>> from nnfin.explain.core import lecture_example
>>> out = pathlib.Path(tempfile.mkdtemp()) / "graph.svg"
>>> write_graph(lecture_example().trace, out, renderer="matplotlib")
'matplotlib'
>>> out.stat().st_size > 0
True
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nnfin import files
from nnfin.errors import ConfigError
from nnfin.explain.render import format_tensor
from nnfin.explain.trace import Trace

__all__ = ["RENDERERS", "SUFFIXES", "GraphPicture", "dot_source", "layout", "write_graph"]

SUFFIXES = (".png", ".svg", ".dot")
RENDERERS = ("auto", "dot", "matplotlib")
MAX_NODES = 30


@dataclass
class GraphPicture:
    """Nodes ``(key, label, kind)`` and edges ``(from, to, label)`` of the picture."""

    nodes: list[tuple[str, str, str]]
    edges: list[tuple[str, str, str]]
    depth: dict[str, int]


def layout(tr: Trace, max_nodes: int = MAX_NODES) -> GraphPicture:
    """Boxes and arrows for the first ``max_nodes`` steps; the rest become one box.

    >>> from nnfin.explain.core import lecture_example
    >>> pic = layout(lecture_example().trace)
    >>> [label.splitlines()[0] for _, label, _ in pic.nodes][:2]
    ['CosBackward0', 'AddBackward0']
    """
    shown = tr.steps[:max_nodes]
    hidden = len(tr.steps) - len(shown)
    nodes: list[tuple[str, str, str]] = []
    edges: list[tuple[str, str, str]] = []
    depth: dict[str, int] = {}
    seen_edges: set[tuple[str, str]] = set()
    for s in shown:
        key = f"n{s.index}"
        depth[key] = s.depth
        if s.leaf is not None:
            label = f"AccumulateGrad\n{s.leaf}\n{s.leaf}.grad = {format_tensor(s.upstream_grad)}"
            nodes.append((key, label, "leaf"))
        else:
            up = ", ".join(format_tensor(g) for g in s.upstream)
            label = f"{s.node}\n{s.output}\n{tr.grad_label(s.output)} = {up}"
            nodes.append((key, label, "root" if s.index == 0 else "node"))
        for k, g in enumerate(s.produced):
            if g.next_index is None:
                none_key = f"{key}_none{k}"
                nodes.append((none_key, "None\n(needs no grad)", "none"))
                depth[none_key] = s.depth + 1
                edges.append((key, none_key, ""))
                continue
            target = f"n{g.next_index}" if g.next_index < max_nodes else "more"
            if (key, target) in seen_edges:
                continue
            seen_edges.add((key, target))
            edges.append((key, target, f"{tr.grad_label(g.target)} = {format_tensor(g.grad)}"))
    if hidden > 0:
        nodes.append(("more", f"... {hidden} more nodes", "more"))
        depth["more"] = max(depth.values(), default=0) + 1
    return GraphPicture(nodes, edges, depth)


_COLORS = {"root": "#f7d9a8", "node": "#dde8f7", "leaf": "#d4f0d4", "none": "#eeeeee",
           "more": "#ffffff"}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot_source(tr: Trace, max_nodes: int = MAX_NODES) -> str:
    """The Graphviz source of the picture (gradients flow down, from y to the leaves).

    >>> from nnfin.explain.core import lecture_example
    >>> "AccumulateGrad" in dot_source(lecture_example().trace)
    True
    """
    pic = layout(tr, max_nodes)
    lines = [
        "digraph backward {",
        '  rankdir=TB; node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for key, label, kind in pic.nodes:
        style = ', style="dashed,filled", fontcolor="#777777"' if kind in ("none", "more") else ""
        lines.append(f"  {key} [label={_q(label)}, fillcolor={_q(_COLORS[kind])}{style}];")
    for a, b, label in pic.edges:
        lines.append(f"  {a} -> {b} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _draw_matplotlib(tr: Trace, tmp: Path, fmt: str, max_nodes: int) -> None:
    """Draw the graph with matplotlib into the writer's temporary file ``tmp``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pic = layout(tr, max_nodes)
    rows: dict[int, list[str]] = {}
    for key, _, _ in pic.nodes:
        rows.setdefault(pic.depth[key], []).append(key)
    width = max(len(r) for r in rows.values())
    fig = Figure(figsize=(max(6.0, 2.8 * width), max(3.0, 1.7 * len(rows))))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    pos: dict[str, tuple[float, float]] = {}
    parents: dict[str, list[str]] = {}
    for a, b, _ in pic.edges:
        parents.setdefault(b, []).append(a)
    for d in sorted(rows):
        keys = rows[d]

        def under_parents(key: str) -> float:
            xs = [pos[p][0] for p in parents.get(key, []) if p in pos]
            return sum(xs) / len(xs) if xs else 0.5

        keys.sort(key=under_parents)  # stable: ties keep the walk's order
        for i, key in enumerate(keys):
            pos[key] = ((i + 0.5) / len(keys), 1.0 - (d + 0.5) / len(rows))
    for a, b, label in pic.edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "-|>", "color": "#555555", "shrinkA": 22,
                                "shrinkB": 22})
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=7, ha="center", va="center",
                    color="#aa3300", bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                           "ec": "none", "alpha": 0.8})
    for key, label, kind in pic.nodes:
        x, y = pos[key]
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.4", "fc": _COLORS[kind],
                      "ec": "#999999" if kind in ("none", "more") else "#333333",
                      "ls": "--" if kind in ("none", "more") else "-"})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.savefig(tmp, format=fmt, dpi=files.FIGURE_DPI)


def _draw_dot(dot: str, source: str, path: Path, fmt: str) -> str | None:
    """Run Graphviz; return None on success or its first error line."""
    try:
        proc = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=source.encode(),
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if proc.returncode != 0 or not path.exists() or path.stat().st_size == 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        return msg[0] if msg else f"exit code {proc.returncode}"
    return None


def check_out_path(path: Path, force: bool = False, option: str = "--out") -> Path:
    """Check the picture's suffix, folder and (without ``force``) that it does not exist.

    >>> check_out_path(Path("graph.jpg"))
    Traceback (most recent call last):
    ...
    nnfin.errors.WriteError: --out 'graph.jpg': file type '.jpg' is not one of .png, .svg, .dot
    """
    return files.check_target(path, force=force, field=option, suffixes=SUFFIXES, folder_exists=True)


def write_graph(
    tr: Trace,
    path: str | os.PathLike[str],
    *,
    renderer: str = "auto",
    force: bool = False,
    max_nodes: int = MAX_NODES,
) -> str:
    """Write the backward graph to ``path`` (.png, .svg or .dot); return the renderer used.

    ``renderer``: ``"auto"`` (Graphviz ``dot`` if on PATH, else matplotlib), ``"dot"`` or
    ``"matplotlib"``. Without ``force`` an existing file raises a ConfigError.

    >>> from nnfin.explain import lecture_example
    >>> write_graph(lecture_example().trace, "graph.svg")  # doctest: +SKIP
    'dot'
    """
    if renderer not in RENDERERS:
        from nnfin.errors import one_of

        raise ConfigError(f"--renderer {renderer!r}: {one_of(renderer, RENDERERS)}")
    path = check_out_path(Path(path), force)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "dot":
        files.write_text(path, dot_source(tr, max_nodes), force=force, field="--out", parents=False)
        return "dot source"
    with files.replacing(path, force=force, field="--out", parents=False) as tmp:
        used = renderer
        dot = shutil.which("dot") if renderer in ("auto", "dot") else None
        if renderer == "dot" and dot is None:
            raise ConfigError("--renderer 'dot': Graphviz 'dot' is not on PATH "
                              "(install graphviz or use --renderer matplotlib)")
        error = _draw_dot(dot, dot_source(tr, max_nodes), tmp, fmt) if dot else "absent"
        if error is not None and renderer == "dot":
            raise ConfigError(f"--renderer 'dot': Graphviz failed: {error}")
        if error is None:
            used = "dot"
        else:
            _draw_matplotlib(tr, tmp, fmt, max_nodes)
            used = "matplotlib"
    return used
