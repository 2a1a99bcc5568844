"""``nnfin explain`` end to end: exit codes, tables, pictures, one-line errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnfin.cli import main


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """``run_cli("explain", ...) -> (code, out, err)`` in-process, in a fresh folder."""
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _one_line_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, out, err = result
    assert code == 2, result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_lecture_example_by_default(run_cli, tmp_path):
    code, out, err = run_cli("explain")
    assert code == 0, err
    for text in ("dy/dz = -1", "dy/dwx = -1", "dy/db = -1", "dy/dw = -0.5",
                 "CosBackward0", "AddBackward0", "MulBackward0", "AccumulateGrad",
                 "y.grad_fn.next_functions[0][0]", "agrees with autograd"):
        assert text in out, text
    # forward values: wx = 0.5, z = pi/2, b = pi/2 - 0.5
    assert "1.571" in out and "1.071" in out
    assert list(tmp_path.iterdir()) == []  # no picture without --out


def test_lecture_example_with_other_values(run_cli):
    code, out, _ = run_cli("explain", "--set", "x=2", "--param", "w=1", "--param", "b=3")
    assert code == 0
    assert "dy/dw = 1.918" in out  # -x sin(wx + b) = -2 sin(5)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".dot"])
def test_picture_written_once_then_needs_force(run_cli, tmp_path, suffix):
    out_file = tmp_path / f"graph{suffix}"
    code, out, err = run_cli("explain", "--out", out_file.name, "--renderer",
                             "matplotlib" if suffix != ".dot" else "auto")
    assert code == 0, err
    data = out_file.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    elif suffix == ".svg":
        assert b"<svg" in data
    else:
        assert b"digraph" in data and b"CosBackward0" in data
    assert "graph written to" in out
    before = out_file.stat().st_mtime_ns, data
    _one_line_error(run_cli("explain", "--out", out_file.name), "already exists", "--force")
    assert out_file.read_bytes() == before[1]
    code, _, err = run_cli("explain", "--out", out_file.name, "--force",
                           "--renderer", "matplotlib")
    assert code == 0, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_picture_errors(run_cli):
    _one_line_error(run_cli("explain", "--out", "graph.jpg"), "'graph.jpg'", ".png")
    _one_line_error(run_cli("explain", "--out", "missing/graph.png"), "does not exist")
    _one_line_error(run_cli("explain", "--out", "g.png", "--renderer", "dott"),
                    "--renderer 'dott'", "did you mean 'dot'")


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz is installed")
def test_dot_renderer_without_graphviz(run_cli):
    _one_line_error(run_cli("explain", "--out", "g.png", "--renderer", "dot"), "not on PATH")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_renderer_with_graphviz(run_cli, tmp_path):
    code, out, err = run_cli("explain", "--out", "g.svg", "--renderer", "dot")
    assert code == 0, err
    assert "(dot)" in out and b"<svg" in (tmp_path / "g.svg").read_bytes()


def test_expression_with_vectors_and_matrices(run_cli):
    code, out, err = run_cli("explain", "W @ x + b", "--set", "x=[1,2]",
                             "--param", "W=[[1,2],[3,4]]", "--param", "b=[0.5, -1]")
    assert code == 0, err
    assert "MvBackward0" in out and "dy/dW = [[1, 2], [1, 2]]" in out
    assert "dy/db = [1, 1]" in out
    assert "not a scalar" in out and "sum" in out


def test_expression_scalar(run_cli):
    code, out, err = run_cli("explain", "sigmoid(w*x + b)", "--set", "x=2",
                             "--param", "w=0", "--param", "b=0")
    assert code == 0, err
    assert "dy/dw = 0.5" in out and "dy/db = 0.25" in out


@pytest.mark.parametrize(("argv", "fragments"), [
    (["x.__class__", "--set", "x=1", "--param", "w=1"], ["'__'"]),
    (["__import__('os').system('true')", "--param", "w=1"], ["'__'"]),
    (["open('f')", "--param", "w=1"], ["function 'open' is not allowed"]),
    (["x.grad", "--set", "x=1", "--param", "w=1"], ["attribute access"]),
    (["x[0]", "--set", "x=[1]", "--param", "w=1"], ["subscripts"]),
    (["lambda: w", "--param", "w=1"], ["lambda"]),
    (["[w for w in x]", "--set", "x=[1]", "--param", "w=1"], ["comprehensions"]),
    (["import os", "--param", "w=1"], ["not a valid expression"]),
    (["q * w", "--param", "w=1"], ["undefined variable 'q'"]),
    (["w * x"], ["no parameter", "--param"]),
    (["x * 2", "--set", "x=1", "--param", "w=1"], ["does not depend"]),
    (["w", "--set", "x", "--param", "w=1"], ["--set 'x'", "NAME=VALUE"]),
    (["w", "--param", "w=[[1,2],[3]]"], ["--param w", "rectangular"]),
    (["w", "--param", "w=[x]"], ["--param w", "undefined variable 'x'"]),
    (["w", "--param", "w=1", "--param", "w=2"], ["given twice"]),
    (["W @ x", "--set", "x=[1,2,3]", "--param", "W=[[1,2],[3,4]]"], ["cannot compute"]),
    (["--set", "y=1"], ["lecture", "'y'"]),
    (["--max-steps", "0"], ["--max-steps 0"]),
])
def test_bad_input_is_one_line_exit_2(run_cli, argv, fragments):
    _one_line_error(run_cli("explain", *argv), *fragments)


def test_markup_like_values_are_shown_verbatim(run_cli):
    code, _, err = run_cli("explain", "w", "--param", "w=[bold]")
    assert code == 2 and "[bold]" in err


# ------------------------------------------------------------------ --model


def _fake_run(monkeypatch, scaler=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1))
    run = SimpleNamespace(model=model, features=["s", "t"], targets=["price"], scaler=scaler)
    import importlib

    monkeypatch.setattr(importlib.import_module("nnfin.runs"), "load_run", lambda path, **kw: run)
    return run


def test_model_with_fake_run(run_cli, monkeypatch, tmp_path):
    run = _fake_run(monkeypatch)
    code, out, err = run_cli("explain", "--model", "some-run", "--set", "s=0.5",
                             "--out", "m.png", "--renderer", "matplotlib")
    assert code == 0, err
    assert "AddmmBackward0" in out and "TanhBackward0" in out
    assert "dprice/d(0.weight)" in out and "dprice/dinputs" in out
    assert "feature(s) t not given" in out
    assert (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG")
    assert all(p.grad is None for p in run.model.parameters())


def test_model_truncates_long_walks(run_cli, monkeypatch):
    _fake_run(monkeypatch)
    code, out, _ = run_cli("explain", "--model", "r", "--max-steps", "3")
    assert code == 0 and "more steps" in out


def test_model_errors(run_cli, monkeypatch):
    _fake_run(monkeypatch)
    _one_line_error(run_cli("explain", "--model", "r", "--set", "u=1"),
                    "--set 'u'", "choose one of s, t")
    _one_line_error(run_cli("explain", "w", "--model", "r"), "not both")
    _one_line_error(run_cli("explain", "--model", "r", "--param", "w=1"), "--param")
    _one_line_error(run_cli("explain", "--model", "r", "--target", "pryce"),
                    "--target 'pryce'", "did you mean 'price'")
    _one_line_error(run_cli("explain", "--target", "price"), "needs --model")


def test_model_from_a_real_run_folder(run_cli, tmp_path):
    from nnfin.app.fit import fit

    run_dir = tmp_path / "run"
    fit(overrides=["train.epochs=1", "data.n=200", "train.progress=false", "train.device=cpu",
                   "run.plots=false", f"run.dir={run_dir}"])
    code, out, err = run_cli("explain", "--model", str(run_dir), "--set", "x=1.5")
    assert code == 0, err
    assert "agrees with autograd" in out and "dy/dinputs" in out
    _one_line_error(run_cli("explain", "--model", str(tmp_path / "nope")), "does not exist")


def test_model_with_scaler_matches_run_predict(tmp_path):
    from nnfin.app.fit import fit
    from nnfin.explain import explain_run
    from nnfin.runs import load_run

    run_dir = tmp_path / "run"
    fit(overrides=["train.epochs=1", "data.n=200", "train.progress=false", "train.device=cpu",
                   "run.plots=false", f"run.dir={run_dir}"])
    ex = explain_run(run_dir, {"x": 1.5})
    run = load_run(run_dir)
    assert ex.trace.value.item() == pytest.approx(float(run.predict([[1.5]])[0, 0]), rel=1e-5)
    # dy/dx of the prediction against a finite difference of run.predict
    h = 1e-3
    fd = (run.predict([[1.5 + h]]) - run.predict([[1.5 - h]]))[0, 0] / (2 * h)
    assert ex.trace.leaf_grads["inputs"].item() == pytest.approx(float(fd), rel=1e-2, abs=1e-4)
    assert ex.trace.agree


def test_help_mentions_modes(run_cli):
    code, out, _ = run_cli("explain", "--help")
    assert code == 0 and "--param" in out and "--model" in out and "--out" in out
