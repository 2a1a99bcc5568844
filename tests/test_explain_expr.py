"""The expression parser: a whitelist over ``ast``; nothing outside it ever runs."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch

import nnfin.explain.expr as expr_module
from nnfin.errors import ConfigError, DataError, NNFinError
from nnfin.explain.expr import evaluate, parse_assignment, parse_value

VARS = {"x": "0.5"}
PARAMS = {"w": "1"}


def _refused(text: str) -> str:
    with pytest.raises(NNFinError) as info:
        evaluate(text, VARS, PARAMS)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(("text", "fragment"), [
    ("x.grad", "attribute access"),
    ("w.data.zero_()", "attribute access"),
    ("x.__class__", "'__'"),
    ("__import__('os').system('echo hacked')", "'__'"),
    ("__builtins__", "'__'"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("eval('1')", "function 'eval' is not allowed"),
    ("torch.cos(x)", "attribute access"),
    ("getattr(x, 'grad')", "function 'getattr'"),
    ("(lambda: 1)()", "function"),
    ("lambda: 1", "lambda"),
    ("[i for i in x]", "comprehensions"),
    ("sum(i for i in x)", "function 'sum'"),
    ("cos(*x)", "one argument"),
    ("cos(x=1)", "one argument"),
    ("cos(x, w)", "one argument"),
    ("x[0]", "subscripts"),
    ("x[0:1]", "subscripts"),
    ("import os", "not a valid expression"),
    ("x; import os", "not a valid expression"),
    ("q * w", "undefined variable 'q'"),
    ("'abc'", "real numbers"),
    ("True * w", "real numbers"),
    ("1j * w", "real numbers"),
    ("x % w", "operators"),
    ("x // w", "operators"),
    ("x < w", "comparisons"),
    ("x if w else 1", "'if'/'else'"),
    ("(y := w)", "':='"),
    ("[x, w]", "lists"),
    ("{'a': 1}", "dicts"),
    ("f'{x}'", "f-strings"),
    ("not w", "unary"),
    ("cos", "is a function"),
    ("", "empty"),
])
def test_refusals_are_one_line_config_errors(text, fragment):
    msg = _refused(text)
    assert fragment in msg, msg
    assert msg.startswith("expression ")


def test_undefined_variable_suggests_a_close_name():
    msg = _refused("ww * x")
    assert "did you mean 'w'?" in msg and "--set ww=VALUE" in msg


def test_nothing_runs_for_refused_text(tmp_path):
    target = tmp_path / "pwned"
    _refused(f"__import__('os').system('touch {target}')")
    _refused(f"open('{target}', 'w')")
    assert not target.exists()


def test_module_never_evaluates_user_text():
    source = inspect.getsource(expr_module)
    assert not re.search(r"(?<![\w.])(eval|exec|compile)\s*\(", source)


def test_limits_on_size_and_depth():
    with pytest.raises(ConfigError, match="limit"):
        evaluate("w+" * 2000 + "w", {}, {"w": 1})
    with pytest.raises(ConfigError):
        evaluate("(" * 300 + "w" + ")" * 300, {}, {"w": 1})
    with pytest.raises(ConfigError, match="parts"):
        evaluate("+".join(["w"] * 400), {}, {"w": 1})


def test_shape_errors_are_one_line_data_errors():
    with pytest.raises(DataError) as info:
        evaluate("W @ x", {"x": "[1, 2, 3]"}, {"W": "[[1, 2], [3, 4]]"})
    assert "\n" not in str(info.value) and "W @ x" in str(info.value)


def test_allowed_grammar():
    ev = evaluate("-(w*x + 1)**2 / 2 + +w - pi + sigmoid(relu(w)) * tanh(abs(-x))",
                  {"x": 0.5}, {"w": 2.0})
    w, x = 2.0, 0.5
    ref = -((w * x + 1) ** 2) / 2 + w - math.pi + (1 / (1 + math.exp(-w))) * math.tanh(x)
    assert ev.value.item() == pytest.approx(ref, rel=1e-6)
    assert ev.params["w"].requires_grad and not ev.inputs["x"].requires_grad
    assert "w * x" in ev.intermediates


def test_matrix_and_vector_values():
    ev = evaluate("W @ x", {"x": "[1, 1]"}, {"W": "[[1, 2], [3, 4]]"})
    assert ev.value.tolist() == [3.0, 7.0] and ev.summed and ev.output.item() == 10.0


@pytest.mark.parametrize(("text", "expected"), [
    ("0.5", 0.5), ("-2", -2.0), ("pi/2 - 0.5", math.pi / 2 - 0.5), ("1e-3", 1e-3),
    ("[1, 2, 3]", [1.0, 2.0, 3.0]), ("[[1, 2], [3, -4]]", [[1.0, 2.0], [3.0, -4.0]]),
    ("(1, 2)", [1.0, 2.0]), ("[sqrt(4), pi]", [2.0, math.pi]),
])
def test_parse_value(text, expected):
    got = parse_value(text)
    assert got.dtype == torch.get_default_dtype()
    if isinstance(expected, float):
        assert got.item() == pytest.approx(expected)
    else:
        torch.testing.assert_close(got, torch.tensor(expected))


@pytest.mark.parametrize(("text", "fragment"), [
    ("[[1, 2], [3]]", "rectangular"), ("[]", "empty"), ("abc", "undefined"),
    ("[1, 'a']", "real numbers"), ("__import__('os')", "'__'"), ("[1, x.y]", "attribute"),
    ("1 +", "not a valid"),
])
def test_parse_value_refusals(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_value(text, "--set x")
    assert fragment in str(info.value) and str(info.value).startswith("--set x")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("x", "NAME=VALUE"), ("x=", "NAME=VALUE"), ("1x=2", "valid variable name"),
    ("__x=1", "valid variable name"), ("cos=1", "built-in"), ("pi=3", "built-in"),
])
def test_parse_assignment_refusals(text, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_assignment(text, "--set")


def test_same_name_in_set_and_param():
    with pytest.raises(ConfigError, match="both"):
        evaluate("x", {"x": 1}, {"x": 2})
