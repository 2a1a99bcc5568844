"""The user guide runs: every page's code blocks are executed, so the guide cannot go stale.

Per page, in order, inside a fresh temporary working folder (holding a copy of ``examples/``):

* ```` ```python ```` blocks run in one namespace shared by the page;
* ```` ```toml file=NAME ```` blocks are written to ``NAME`` (configs the page then uses);
* ```` ```console ```` blocks run their ``$ nnfin ...`` lines with the in-process CLI; a
  command followed by an ``error: ...`` line must fail with exit code 2 and print that line;
* blocks marked ``no-run`` (```` ```python no-run ````) are only compiled, or skipped.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("[0-9][0-9]-*.md"))
FENCE = re.compile(r"^```([\w-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def blocks(page: Path) -> list[tuple[str, str, str, int]]:
    """``(language, info, code, line)`` of each fenced block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text)]


def commands(code: str) -> list[tuple[list[str], str | None]]:
    """``$ nnfin ...`` lines (``\\`` continues a line) with the ``error:`` line after each, if any."""
    lines = code.splitlines()
    out: list[tuple[list[str], str | None]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ nnfin"):
            cmd = line[2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            out.append((shlex.split(cmd, comments=True)[1:], nxt if nxt.startswith("error:") else None))
        i += 1
    return out


def test_guide_has_pages_and_an_index():
    assert len(PAGES) >= 10
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"({page.name})" in index, f"{page.name} is not linked from docs/README.md"
        assert page.read_text(encoding="utf-8").startswith("# "), page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_runs(page: Path, tmp_path, monkeypatch, cli):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    for lang, info, code, line in blocks(page):
        where = f"{page.name}:{line}"
        if lang == "python":
            compiled = compile(code, where, "exec")  # no-run blocks must still be valid Python
            if "no-run" not in info:
                exec(compiled, namespace)
        elif lang == "toml" and info.startswith("file="):
            Path(info.removeprefix("file=")).write_text(code, encoding="utf-8")
        elif lang == "console" and "no-run" not in info:
            for argv, error in commands(code):
                result = cli(*argv)
                if error is None:
                    assert result.code == 0, (where, argv, result.err, result.out[-2000:])
                else:
                    assert result.code == 2, (where, argv, result)
                    assert result.err.strip() == error, (where, argv)
