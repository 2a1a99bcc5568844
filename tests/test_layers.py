"""The house: every module imports only its own layer or the ones below, and no import circles.

Layers, top to bottom (docs/architecture.md):
commands/cli -> app (fit, resume, cv, tune, lr_find, report, runs) -> tune (search), saving,
sklearn -> train (the engine), explain -> runs, io (run folders and model files) -> data ->
models, finance, plots -> config, files, memory, searchspace, device, distributed -> errors.
Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nnfin

SRC = Path(nnfin.__file__).parent

LAYERS = [  # (layer, module prefixes); the first prefix that matches wins
    (0, ["nnfin.errors", "nnfin.version", "nnfin.metrics"]),
    (1, ["nnfin.files", "nnfin.memory", "nnfin.searchspace", "nnfin.device", "nnfin.distributed",
         "nnfin.config"]),
    (2, ["nnfin.plots", "nnfin.finance", "nnfin.models"]),
    (3, ["nnfin.data"]),
    (4, ["nnfin.io", "nnfin.runs"]),
    (5, ["nnfin.train", "nnfin.explain"]),
    (6, ["nnfin.tune", "nnfin.saving", "nnfin.sklearn"]),
    (7, ["nnfin.app"]),
    (8, ["nnfin.commands", "nnfin.cli", "nnfin.__main__", "nnfin"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    for level, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def imports(path: Path, known: set[str]) -> set[str]:
    """nnfin modules ``path`` imports (``from nnfin import files`` is ``nnfin.files``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("nnfin"):
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    known = set(paths)
    out = {}
    for mod, path in paths.items():
        deps = imports(path, known) - {mod}
        # a package's own __init__ is implied by importing its modules: count real modules only
        out[mod] = {d for d in deps if not (mod.startswith(d + ".") and d in known
                                            and paths[d].name == "__init__.py")}
    return out


def test_no_module_imports_a_layer_above_it():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert bad == [], "\n".join(bad)


def test_no_import_circles():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert circles == []


def test_the_check_sees_an_upward_import(tmp_path):
    assert layer("nnfin.train.loop") < layer("nnfin.app.fit")
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from nnfin.app.fit import fit\n")
    assert imports(sample, {"nnfin.app.fit", "nnfin.app", "nnfin"}) >= {"nnfin.app.fit"}
