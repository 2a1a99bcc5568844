"""Shared fixtures: a fast config and a CLI runner that captures exit code and output."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests run in parallel workers (pytest -n 2): one intra-op thread each avoids OpenMP
# oversubscription, which makes small-network training orders of magnitude slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

FAST = ["train.epochs=3", "data.n=300", "train.progress=false", "train.device=cpu"]


@pytest.fixture
def fast() -> list[str]:
    """Overrides that make a run take a fraction of a second."""
    return list(FAST)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err!r})"


@pytest.fixture
def cli(capsys):
    """Run ``nnfin ...`` in-process: ``cli("fit", "--set", "x=1") -> CliResult``."""
    from nnfin.cli import main

    def run(*argv: str) -> CliResult:
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit code 2, a single ``error:`` line on stderr naming the fragments, no traceback."""
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error:"), result.err
    assert "Traceback" not in result.err + result.out
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
