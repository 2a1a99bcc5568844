"""Safe evaluation of small user expressions such as ``cos(w*x + b)`` with torch tensors.

The text is parsed with :mod:`ast` and walked node by node against a whitelist; it is
never passed to ``eval``, ``exec`` or ``compile``. Allowed: numbers, named variables,
``+ - * / ** @``, unary ``-``/``+``, parentheses, the constant ``pi`` and the functions
in :data:`FUNCTIONS`. Everything else (attribute access, subscripts, other calls, lambda,
comprehensions, names starting with ``__``, undefined names ...) raises a one-line
:class:`~nnfin.errors.ConfigError`.

>>> ev = evaluate("cos(w*x + b)", inputs={"x": "0.5"}, params={"w": "1", "b": "pi/2 - 0.5"})
>>> round(ev.value.item(), 6), list(ev.params)
(-0.0, ['w', 'b'])
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nnfin.errors import ConfigError, DataError, did_you_mean, one_of

__all__ = ["CONSTANTS", "FUNCTIONS", "Evaluation", "evaluate", "parse_assignment", "parse_value"]

FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "exp": torch.exp,
    "log": torch.log,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
}
CONSTANTS: dict[str, float] = {"pi": math.pi}
MAX_LENGTH = 2000
MAX_NODES = 500

_BINOPS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.Pow: ("**", lambda a, b: a**b),
    ast.MatMult: ("@", lambda a, b: a @ b),
}
_NODE_WORDS: dict[type, str] = {
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.Lambda: "lambda is",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.Compare: "comparisons are",
    ast.BoolOp: "'and'/'or' are",
    ast.IfExp: "'if'/'else' is",
    ast.NamedExpr: "':=' is",
    ast.Starred: "'*' unpacking is",
    ast.List: "lists are",
    ast.Tuple: "tuples are",
    ast.Set: "sets are",
    ast.Dict: "dicts are",
    ast.JoinedStr: "f-strings are",
    ast.Await: "'await' is",
    ast.Yield: "'yield' is",
    ast.YieldFrom: "'yield' is",
    ast.Slice: "slices are",
}


@dataclass
class Evaluation:
    """A computed expression: its value, its variables and every named intermediate.

    ``intermediates`` maps the source text of each operation (``"w * x"``) to its tensor,
    in the order they were computed; ``output`` is the scalar to explain: ``value`` itself,
    or ``value.sum()`` when the value is not a scalar (then ``summed`` is true).
    """

    expression: str
    value: torch.Tensor
    output: torch.Tensor
    summed: bool
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)

    def names(self) -> dict[str, torch.Tensor]:
        """Every named tensor (variables first, then intermediates), for :func:`trace`."""
        named = {**self.params, **self.inputs}
        for key, t in self.intermediates.items():
            if t is not self.output and all(t is not v for v in named.values()):
                named[key] = t
        return named


def _one_line(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse(text: str, field_name: str) -> ast.expr:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{field_name} {text!r} is empty")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"{field_name} is {len(text)} characters long; the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(
            f"{field_name} {_one_line(text)!r} is not a valid expression ({exc.msg})"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"{field_name} {_one_line(text)!r} is nested too deeply") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ConfigError(f"{field_name} {_one_line(text)!r} has more than {MAX_NODES} parts")
    return tree.body


def _refuse(node: ast.AST, field_name: str, text: str, what: str) -> ConfigError:
    try:
        part = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of a parsed node should not fail
        part = type(node).__name__
    return ConfigError(f"{field_name} {_one_line(text)!r}: {what} ({_one_line(part, 40)!r})")


def _check(node: ast.AST, field_name: str, text: str, variables: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError for anything outside the whitelist (nothing is run)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id.startswith("__"):
            raise _refuse(sub, field_name, text, "names starting with '__' are not allowed")
        if isinstance(sub, ast.Attribute) and sub.attr.startswith("__"):
            raise _refuse(sub, field_name, text, "names starting with '__' are not allowed")
    _check_node(node, field_name, text, variables)


def _check_node(node: ast.AST, field_name: str, text: str, variables: Mapping[str, Any]) -> None:
    refuse = lambda what: _refuse(node, field_name, text, what)  # noqa: E731
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise refuse("only real numbers are allowed as constants")
    elif isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise refuse(f"{node.id!r} is a function; call it as {node.id}(...)")
        if node.id not in variables and node.id not in CONSTANTS:
            known = [*variables, *CONSTANTS]
            hint = did_you_mean(node.id, known)
            raise refuse(
                f"undefined variable {node.id!r}; define it with --set {node.id}=VALUE or "
                f"--param {node.id}=VALUE{hint}"
            )
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise refuse("only the operators + - * / ** @ are allowed")
        _check_node(node.left, field_name, text, variables)
        _check_node(node.right, field_name, text, variables)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise refuse("only unary '-' and '+' are allowed")
        _check_node(node.operand, field_name, text, variables)
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            hint = f"; write {node.func.attr}(...)" if node.func.attr in FUNCTIONS else ""
            raise _refuse(node.func, field_name, text, f"attribute access is not allowed{hint}")
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            fname = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise refuse(f"function {_one_line(fname, 30)!r} is not allowed; "
                         f"{one_of(fname, FUNCTIONS)}")
        if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
            raise refuse(f"{node.func.id}() takes exactly one argument")
        _check_node(node.args[0], field_name, text, variables)
    else:
        what = _NODE_WORDS.get(type(node), f"{type(node).__name__} expressions are")
        raise refuse(f"{what} not allowed")


def _to_tensor(value: Any, field_name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, str):
        return parse_value(value, field_name)
    try:
        return torch.tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{field_name} = {value!r} is not a number or list of numbers") from None


def parse_value(text: str, field_name: str = "value") -> torch.Tensor:
    """Parse ``"0.5"``, ``"pi/2 - 0.5"``, ``"[1, 2, 3]"`` or ``"[[1, 2], [3, 4]]"`` safely.

    Each number may be a constant expression (numbers, ``pi`` and the whitelisted
    functions); lists must be rectangular. The result is a float tensor.

    >>> parse_value("[[1, 2], [3, -4]]").tolist()
    [[1.0, 2.0], [3.0, -4.0]]
    >>> round(parse_value("pi/2").item(), 4)
    1.5708
    """
    tree = _parse(text, field_name)

    def literal(node: ast.expr) -> Any:
        if isinstance(node, ast.List | ast.Tuple):
            if not node.elts:
                raise _refuse(node, field_name, text, "empty lists are not allowed")
            return [literal(e) for e in node.elts]
        _check(node, field_name, text, {})
        return float(_Evaluator({}, field_name, text).visit(node))

    nested = literal(tree)
    try:
        value = torch.tensor(nested, dtype=torch.get_default_dtype())
    except (ValueError, TypeError):
        raise ConfigError(
            f"{field_name} {_one_line(text)!r} is not rectangular (rows of different lengths)"
        ) from None
    if not bool(torch.isfinite(value).all()):
        raise ConfigError(f"{field_name} {_one_line(text)!r} is not a finite number "
                          f"(it evaluates to {value.flatten()[~torch.isfinite(value.flatten())][0].item()})")
    return value


def parse_assignment(text: str, option: str = "--set") -> tuple[str, str]:
    """Split ``"NAME=VALUE"`` and check the name.

    >>> parse_assignment("x=[1, 2]")
    ('x', '[1, 2]')
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not value.strip():
        raise ConfigError(f"{option} {text!r}: expected NAME=VALUE, e.g. {option} x=0.5")
    if not name.isidentifier() or name.startswith("__"):
        raise ConfigError(f"{option} {text!r}: {name!r} is not a valid variable name")
    if name in FUNCTIONS or name in CONSTANTS:
        raise ConfigError(f"{option} {text!r}: {name!r} is a built-in name; choose another")
    return name, value.strip()


class _Evaluator:
    """Evaluate a *checked* tree with torch; record each operation's result by its text."""

    def __init__(self, variables: Mapping[str, torch.Tensor], field_name: str, text: str):
        self.variables = variables
        self.field_name = field_name
        self.text = text
        self.intermediates: dict[str, torch.Tensor] = {}

    def _record(self, node: ast.expr, value: torch.Tensor) -> torch.Tensor:
        self.intermediates.setdefault(ast.unparse(node), value)
        return value

    def _apply(self, node: ast.expr, fn: Callable[..., Any], *args: Any) -> torch.Tensor:
        try:
            return self._record(node, fn(*args))
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(
                f"{self.field_name} {_one_line(self.text)!r}: cannot compute "
                f"{_one_line(ast.unparse(node), 40)!r}: {_one_line(first, 120)}"
            ) from None

    def visit(self, node: ast.expr) -> torch.Tensor:
        if isinstance(node, ast.Constant):
            return torch.tensor(float(node.value), dtype=torch.get_default_dtype())
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return torch.tensor(CONSTANTS[node.id], dtype=torch.get_default_dtype())
            return self.variables[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self.visit(node.left), self.visit(node.right)
            return self._apply(node, _BINOPS[type(node.op)][1], left, right)
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            return self._apply(node, torch.neg, operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            arg = self.visit(node.args[0])
            return self._apply(node, FUNCTIONS[node.func.id], arg)
        raise _refuse(node, self.field_name, self.text, "not allowed")  # pragma: no cover


def evaluate(
    expression: str,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate ``expression`` with ``inputs`` (no grad) and ``params`` (requires_grad).

    Values may be tensors, numbers, nested lists or strings for :func:`parse_value`.
    A non-scalar result is summed into ``output`` (and ``summed`` is set), so the
    backward walk always starts from a scalar.

    >>> ev = evaluate("W @ x", inputs={"x": "[1, 1]"}, params={"W": "[[1, 2], [3, 4]]"})
    >>> ev.value.tolist(), ev.summed, ev.output.item()
    ([3.0, 7.0], True, 10.0)
    """
    inputs, params = dict(inputs or {}), dict(params or {})
    both = sorted(set(inputs) & set(params))
    if both:
        raise ConfigError(f"variable {both[0]!r} is given both by --set and by --param")
    tensors_in: dict[str, torch.Tensor] = {}
    tensors_p: dict[str, torch.Tensor] = {}
    for option, src, dst in (("--set", inputs, tensors_in), ("--param", params, tensors_p)):
        for name, raw in src.items():
            parse_assignment(f"{name}=_", option)  # validate the name
            t = _to_tensor(raw, f"{option} {name}").detach()
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
            dst[name] = t.clone().requires_grad_(option == "--param")
    variables = {**tensors_in, **tensors_p}
    tree = _parse(expression, "expression")
    _check(tree, "expression", expression, variables)
    ev = _Evaluator(variables, "expression", expression)
    value = ev.visit(tree)
    if not isinstance(value, torch.Tensor):  # pragma: no cover - visit always gives tensors
        value = torch.as_tensor(value)
    summed = value.numel() != 1
    output = value.sum() if summed else value
    return Evaluation(expression, value, output, summed, tensors_in, tensors_p,
                      ev.intermediates)
