"""Explanations: a forward pass, its hand-walked backward pass and the checks, ready to show.

>>> ex = lecture_example()
>>> [(n, round(float(ex.trace.gradient(n)), 4)) for n in ("z", "wx", "b", "w")]
[('z', -1.0), ('wx', -1.0), ('b', -1.0), ('w', -0.5)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nnfin.errors import ConfigError, DataError
from nnfin.explain.expr import evaluate, parse_value
from nnfin.explain.trace import Trace, trace

__all__ = ["LECTURE_EXPRESSION", "Explanation", "explain_expression", "lecture_example"]

LECTURE_EXPRESSION = "cos(w*x + b)"


@dataclass
class ForwardValue:
    """One row of the forward pass: a name, how it was computed, its value."""

    name: str
    formula: str
    value: torch.Tensor
    requires_grad: bool = False


@dataclass
class Explanation:
    """What ``nnfin explain`` shows: forward values, the walk, its check, and notes.

    ``closed_form`` optionally holds independent reference gradients (by leaf or
    intermediate name) computed from a formula rather than by autograd.
    """

    title: str
    forward: list[ForwardValue]
    trace: Trace
    notes: list[str] = field(default_factory=list)
    closed_form: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def closed_form_agrees(self) -> bool:
        """True when every closed-form gradient matches the walk (vacuously true if none)."""
        for name, ref in self.closed_form.items():
            try:
                got = self.trace.gradient(name)
            except KeyError:
                return False
            if not torch.allclose(got.double(), ref.double(), rtol=1e-5, atol=1e-6):
                return False
        return True


def _value(raw: Any, field_name: str) -> torch.Tensor:
    if isinstance(raw, torch.Tensor):
        return raw.detach().clone().to(torch.get_default_dtype())
    if isinstance(raw, str):
        return parse_value(raw, field_name)
    return torch.tensor(float(raw))


def lecture_example(
    x: Any = 0.5, w: Any = 1.0, b: Any = None
) -> Explanation:
    """The lecture's ``y = cos(w x + b)`` (x = 0.5, w = 1, b = pi/2 - 0.5), step by step.

    The forward pass names its intermediates as the slides do (``wx = w * x``,
    ``z = wx + b``, ``y = cos(z)``), so the walk yields dy/dz, dy/dwx, dy/db and dy/dw.
    Values may be numbers, tensors or strings such as ``"pi/2 - 0.5"``.

    >>> ex = lecture_example(x=2.0, w=1.0, b=3.0)   # the slides' other example
    >>> round(ex.trace.leaf_grads["w"].item(), 4) == round(-2.0 * math.sin(5.0), 4)
    True
    """
    xt = _value(x, "--set x")
    wt = _value(w, "--param w").requires_grad_(True)
    bt = _value(0.5 * math.pi - 0.5 if b is None else b, "--param b").requires_grad_(True)
    for name, t in (("x", xt), ("w", wt), ("b", bt)):
        if t.numel() != 1:
            raise ConfigError(f"the lecture example needs a scalar {name}, got shape {list(t.shape)}")
    wx = wt * xt
    z = wx + bt
    y = torch.cos(z)
    t = trace(y, names={"x": xt, "w": wt, "b": bt, "wx": wx, "z": z})
    with torch.no_grad():
        s = torch.sin(z)
        closed = {"z": -s, "wx": -s, "b": -s, "w": -xt * s}
    forward = [
        ForwardValue("x", "input (requires_grad=False)", xt.detach()),
        ForwardValue("w", "parameter (requires_grad=True)", wt.detach(), True),
        ForwardValue("b", "parameter (requires_grad=True)", bt.detach(), True),
        ForwardValue("wx", "w * x", wx.detach()),
        ForwardValue("z", "wx + b", z.detach()),
        ForwardValue("y", "cos(z)", y.detach()),
    ]
    notes = [
        "closed form: dy/dz = dy/dwx = dy/db = -sin(wx + b), dy/dw = -x sin(wx + b)",
    ]
    return Explanation("y = cos(w x + b), the lecture's example", forward, t, notes, closed)


def explain_expression(
    expression: str,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Explanation:
    """Evaluate a whitelisted expression and walk its backward graph.

    ``inputs`` become tensors without gradient (``--set``), ``params`` tensors with
    ``requires_grad=True`` (``--param``). A non-scalar result is summed first and a note
    says so.

    >>> ex = explain_expression("sigmoid(w*x)", inputs={"x": 2.0}, params={"w": 0.0})
    >>> ex.trace.leaf_grads["w"].item()   # sigmoid'(0) * x = 0.25 * 2
    0.5
    """
    params = dict(params or {})
    if not params:
        raise ConfigError(
            f"expression {expression!r} has no parameter to differentiate; "
            f"give at least one --param NAME=VALUE"
        )
    ev = evaluate(expression, inputs, params)
    if not ev.output.requires_grad:
        raise DataError(
            f"expression {expression!r} does not depend on any --param "
            f"({', '.join(ev.params)}); there is nothing to differentiate"
        )
    names = ev.names()
    t = trace(ev.output, names=names, output="y")
    forward = [ForwardValue(n, "input (requires_grad=False)", v.detach())
               for n, v in ev.inputs.items()]
    forward += [ForwardValue(n, "parameter (requires_grad=True)", v.detach(), True)
                for n, v in ev.params.items()]
    for text, value in ev.intermediates.items():
        if value is not ev.value:
            forward.append(ForwardValue(text, "intermediate", value.detach()))
    notes: list[str] = []
    if ev.summed:
        forward.append(ForwardValue("value", expression, ev.value.detach()))
        forward.append(ForwardValue("y", "sum(value)", ev.output.detach()))
        notes.append(
            f"the expression's value has shape {list(ev.value.shape)}, not a scalar: "
            f"y is its sum, and the gradients are those of the sum"
        )
    else:
        forward.append(ForwardValue("y", expression, ev.output.detach()))
    unused = [n for n in ev.params if n not in t.leaf_grads]
    if unused:
        notes.append(f"parameter(s) {', '.join(unused)} do not affect y (no path reaches them)")
    return Explanation(f"y = {expression}", forward, t, notes)
