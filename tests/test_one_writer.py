"""Every file nnfin writes goes through nnfin.files: no other module opens a file for writing.

The walk reads the source of every module and flags calls that write, move or delete files.
A library's save function may only write the temporary path the writer hands out (a variable
named ``tmp``), inside ``files.replacing`` / ``files.write_with``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nnfin

SRC = Path(nnfin.__file__).parent
OWNER = SRC / "files.py"

# names of calls that write, move or delete files (methods or functions)
WRITES = {"write_text", "write_bytes", "to_csv", "to_parquet", "to_json", "to_hdf", "savefig",
          "save_file", "write_table", "mkdir", "makedirs", "unlink", "rmdir", "rmtree", "rename",
          "symlink_to", "touch", "copyfile", "copy", "copy2", "move", "remove", "truncate", "tofile",
          "savez", "save"}
MODULES = {"os", "shutil", "torch", "np", "numpy", "pq", "pickle", "json"}  # module-level callers


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _writes_tmp(call: ast.Call) -> bool:
    """The call writes the writer's temporary path (``tmp``) or an in-memory buffer (``buf``)."""
    names = {n.id for a in [*call.args, *(k.value for k in call.keywords)] for n in ast.walk(a)
             if isinstance(n, ast.Name)}
    return bool(names & {"tmp", "buf"})


def _read_only(mode: ast.AST) -> bool:
    return isinstance(mode, ast.Constant) and set(str(mode.value)) <= set("rbt")


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{path.relative_to(SRC.parent)}:{node.lineno}: {_text(node)[:80]}"
        if isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if mode is not None and not _read_only(mode):
                found.append(where)
            continue
        if isinstance(func, ast.Name) and func.id in WRITES - {"save", "copy", "remove", "move"}:
            if not _writes_tmp(node):
                found.append(where)
            continue
        if not isinstance(func, ast.Attribute) or func.attr not in WRITES | {"replace", "open"}:
            continue
        owner = _text(func.value)
        if owner == "files" or owner.startswith("files."):
            continue  # through the writer
        if func.attr == "replace" and owner not in ("os", "shutil"):
            continue  # str.replace, Path.with_suffix...
        if func.attr == "open":
            mode = next((k.value for k in node.keywords if k.arg == "mode"),
                        node.args[0] if node.args else None)
            if mode is None or _read_only(mode):
                continue
            found.append(where)
            continue
        if func.attr in ("save", "copy", "remove", "move") and owner not in MODULES:
            continue  # a model's own .save(), dict.copy(), list.remove()...
        if _writes_tmp(node):
            continue
        found.append(where)
    return found


def test_only_nnfin_files_writes():
    modules = [p for p in SRC.rglob("*.py") if p != OWNER]
    assert len(modules) > 40
    bad = [hit for p in modules for hit in offences(p)]
    assert bad == [], "files written outside nnfin.files:\n" + "\n".join(bad)


def test_the_walk_catches_each_kind_of_write(tmp_path):
    sample = tmp_path / "nnfin_sample.py"
    lines = ["open('a', 'w')", "open(p, mode='ab')", "df.to_csv(path)", "fig.savefig(out)",
             "os.replace(a, b)", "Path(x).write_text('y')", "torch.save(obj, path)",
             "shutil.rmtree(d)", "save_file(t, str(path))", "p.mkdir(parents=True)", "p.unlink()"]
    sample.write_text("\n".join(lines) + "\n")
    found = offences_in(sample)
    assert len(found) == len(lines), found
    fine = tmp_path / "nnfin_fine.py"
    fine.write_text("open('a')\nopen(p, 'rb')\ns.replace('a', 'b')\nfiles.write_text(p, 'x')\n"
                    "frame.to_csv(tmp)\ntorch.save(obj, buf)\nd.copy()\n")
    assert offences_in(fine) == []


def offences_in(path: Path) -> list[str]:
    global SRC
    saved, SRC = SRC, path.parent
    try:
        return offences(path)
    finally:
        SRC = saved
