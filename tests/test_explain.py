"""nnfin.explain.trace: the hand-walked backward pass against autograd and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnfin.errors import DataError, NNFinError
from nnfin.explain import (
    explain_expression,
    explain_model,
    lecture_example,
    trace,
)


def _lecture_tensors():
    x = torch.tensor(0.5)
    w = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(0.5 * math.pi - 0.5, requires_grad=True)
    wx = w * x
    z = wx + b
    y = torch.cos(z)
    return x, w, b, wx, z, y


def test_lecture_walk_gives_the_slides_values():
    x, w, b, wx, z, y = _lecture_tensors()
    t = trace(y, names={"x": x, "w": w, "b": b, "wx": wx, "z": z})
    assert [s.node for s in t.steps] == [
        "CosBackward0", "AddBackward0", "AccumulateGrad", "MulBackward0", "AccumulateGrad"]
    cos, add, acc_b, mul, acc_w = t.steps
    assert cos.upstream_grad.item() == 1.0 and cos.access == "y.grad_fn"
    assert [(g.target, g.grad.item()) for g in cos.produced] == [("z", -1.0)]
    assert add.access == "y.grad_fn.next_functions[0][0]"
    assert [(g.target, g.grad.item()) for g in add.produced] == [("wx", -1.0), ("b", -1.0)]
    assert mul.access == "y.grad_fn.next_functions[0][0].next_functions[0][0]"
    assert mul.produced[0].target == "w" and mul.produced[0].grad.item() == pytest.approx(-0.5)
    assert mul.produced[1].next_index is None  # x needs no grad: the slides' "None"
    assert acc_b.leaf == "b" and acc_w.leaf == "w"
    assert cos.leaves == ("b", "w") and mul.leaves == ("w",)
    assert t.gradient("z").item() == -1.0 and t.gradient("wx").item() == -1.0
    assert t.leaf_grads["w"].item() == pytest.approx(-0.5)
    assert t.leaf_grads["b"].item() == pytest.approx(-1.0)
    assert t.agree and t.max_abs_diff == 0.0


def test_walk_matches_the_slides_direct_calls():
    _, _, _, _, _, y = _lecture_tensors()
    t = trace(y)
    dy_dz = y.grad_fn(torch.tensor(1.0))
    dy_dwx, dy_db = y.grad_fn.next_functions[0][0](dy_dz)
    dy_dw, none = y.grad_fn.next_functions[0][0].next_functions[0][0](dy_dwx)
    assert none is None
    assert t.steps[0].produced[0].grad.item() == dy_dz.item()
    assert t.steps[1].produced[1].grad.item() == dy_db.item()
    assert t.steps[3].produced[0].grad.item() == dy_dw.item()


def test_graph_and_grad_are_left_alone():
    _, w, b, _, _, y = _lecture_tensors()
    trace(y)
    trace(y)  # twice: the graph is kept
    assert w.grad is None and b.grad is None  # AccumulateGrad was not called
    y.backward()  # the user's own backward still works
    s = math.sin(0.5 + 0.5 * math.pi - 0.5)
    assert w.grad.item() == pytest.approx(-0.5 * s) and b.grad.item() == pytest.approx(-s)


@pytest.mark.parametrize(("x", "w", "b"), [(0.5, 1.0, math.pi / 2 - 0.5), (2.0, 1.0, 3.0),
                                           (-1.3, 0.7, 0.2)])
def test_lecture_example_closed_form(x, w, b):
    ex = lecture_example(x=x, w=w, b=b)
    s = math.sin(w * x + b)
    assert ex.trace.leaf_grads["w"].item() == pytest.approx(-x * s, rel=1e-5, abs=1e-6)
    assert ex.trace.leaf_grads["b"].item() == pytest.approx(-s, rel=1e-5, abs=1e-6)
    assert ex.trace.gradient("z").item() == pytest.approx(-s, rel=1e-5, abs=1e-6)
    assert ex.trace.agree and ex.closed_form_agrees
    assert [f.name for f in ex.forward] == ["x", "w", "b", "wx", "z", "y"]


def test_leaf_reached_by_several_paths_accumulates():
    w = torch.tensor(3.0, requires_grad=True)
    c = torch.tensor(2.0, requires_grad=True)
    y = w * w + torch.sin(w) * c
    t = trace(y, names={"w": w, "c": c})
    acc_w = next(s for s in t.steps if s.leaf == "w")
    assert acc_w.contributions == 3  # w*w twice, sin(w) once
    assert t.leaf_grads["w"].item() == pytest.approx(2 * 3.0 + 2.0 * math.cos(3.0), rel=1e-6)
    assert t.leaf_grads["c"].item() == pytest.approx(math.sin(3.0), rel=1e-6)
    assert t.agree


def test_shared_intermediate_is_called_once_with_the_sum():
    w = torch.tensor(0.3, requires_grad=True)
    u = torch.exp(w)  # used by two branches
    y = u * u + torch.tanh(u)
    t = trace(y, names={"w": w, "u": u})
    exp_steps = [s for s in t.steps if s.node == "ExpBackward0"]
    assert len(exp_steps) == 1 and exp_steps[0].contributions == 3
    (ref,) = torch.autograd.grad(y, w, retain_graph=True)
    assert t.gradient("u").item() == pytest.approx(2 * u.item() + 1 - math.tanh(u.item()) ** 2)
    assert t.leaf_grads["w"].item() == pytest.approx(ref.item(), rel=1e-6) and t.agree


def test_non_scalar_intermediates_and_broadcasting():
    torch.manual_seed(0)
    W = torch.randn(3, 2, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    v = torch.randn(1, requires_grad=True)  # broadcast against (3,)
    x = torch.randn(2)
    h = torch.sigmoid(W @ x + bias) * v
    y = (h**2).sum()
    t = trace(y, names={"W": W, "bias": bias, "v": v})
    ref = torch.autograd.grad(y, [W, bias, v], retain_graph=True)
    for name, r in zip(("W", "bias", "v"), ref, strict=True):
        assert t.leaf_grads[name].shape == r.shape
        torch.testing.assert_close(t.leaf_grads[name], r)
    assert t.agree


def test_module_with_bias_broadcast_is_summed_like_the_engine():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    y = net(torch.randn(5, 2)).mean()
    t = trace(y, names=dict(net.named_parameters()))
    ref = torch.autograd.grad(y, list(net.parameters()), retain_graph=True)
    for (name, _), r in zip(net.named_parameters(), ref, strict=True):
        torch.testing.assert_close(t.leaf_grads[name], r)
    assert t.agree


def test_multi_output_node_gets_none_for_unused_outputs():
    p = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a, _, c = p.unbind(0)
    y = a * c
    t = trace(y, names={"p": p})
    unbind = next(s for s in t.steps if s.node == "UnbindBackward0")
    assert len(unbind.upstream) == 3 and unbind.upstream[1] is None
    assert unbind.contributions == 2
    assert t.leaf_grads["p"].tolist() == [3.0, 0.0, 1.0] and t.agree


def test_unnamed_tensors_get_generated_names():
    w = torch.tensor(1.0, requires_grad=True)
    t = trace(torch.exp(torch.sin(w)))
    assert t.steps[0].output == "y" and t.steps[1].output == "t1"
    assert list(t.leaf_grads) == ["leaf0"] and t.agree


def test_y_may_be_a_leaf():
    w = torch.tensor(2.0, requires_grad=True)
    t = trace(w, names={"w": w})
    assert t.steps == [] and t.leaf_grads["w"].item() == 1.0 and t.agree


def test_refuses_non_scalar_and_constant_outputs():
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(DataError, match=r"shape \[3\]"):
        trace(w * 2)
    with pytest.raises(DataError, match="does not depend"):
        trace(torch.tensor(1.0) * 2)
    with pytest.raises(NNFinError):
        trace([1.0])  # type: ignore[arg-type]


def test_freed_graph_is_a_one_line_error():
    w = torch.tensor(1.0, requires_grad=True)
    y = torch.sin(w) * w
    y.backward()  # frees the saved tensors
    with pytest.raises(DataError) as info:
        trace(y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("expr", [
    "cos(w*x + b)", "tanh(W @ x) * b", "exp(-w*x) / (1 + w**2)", "sqrt(abs(w) + 1) - log(b)",
    "relu(W @ x - b) @ x", "sigmoid(x * w) * sigmoid(x * w)", "-(w - x) ** 3 + pi * b",
])
def test_expressions_against_autograd(expr):
    inputs = {"x": "[0.5, -1.5]"}
    params = {"w": "0.7", "b": "1.3", "W": "[[1, -2], [0.5, 3]]"}
    used = {k: v for k, v in params.items() if k in expr}
    ex = explain_expression(expr, inputs, used)
    leaves = {n: ex.trace.leaves[n] for n in ex.trace.leaf_grads}
    xt = torch.tensor([0.5, -1.5])
    env = {"x": xt, **{n: leaves[n] for n in leaves}}
    fns = {"cos": torch.cos, "tanh": torch.tanh, "exp": torch.exp, "sqrt": torch.sqrt,
           "abs": torch.abs, "log": torch.log, "relu": torch.relu, "sigmoid": torch.sigmoid,
           "pi": math.pi}
    # an independent forward computation written in Python, then torch.autograd.grad
    y = {
        "cos(w*x + b)": lambda e: fns["cos"](e["w"] * e["x"] + e["b"]).sum(),
        "tanh(W @ x) * b": lambda e: (torch.tanh(e["W"] @ e["x"]) * e["b"]).sum(),
        "exp(-w*x) / (1 + w**2)": lambda e: (torch.exp(-e["w"] * e["x"]) / (1 + e["w"] ** 2)).sum(),
        "sqrt(abs(w) + 1) - log(b)": lambda e: torch.sqrt(e["w"].abs() + 1) - torch.log(e["b"]),
        "relu(W @ x - b) @ x": lambda e: torch.relu(e["W"] @ e["x"] - e["b"]) @ e["x"],
        "sigmoid(x * w) * sigmoid(x * w)": lambda e: (torch.sigmoid(e["x"] * e["w"]) ** 2).sum(),
        "-(w - x) ** 3 + pi * b": lambda e: (-((e["w"] - e["x"]) ** 3) + math.pi * e["b"]).sum(),
    }[expr](env)
    ref = torch.autograd.grad(y, list(leaves.values()))
    for name, r in zip(leaves, ref, strict=True):
        torch.testing.assert_close(ex.trace.leaf_grads[name], r, rtol=1e-5, atol=1e-6)
    assert ex.trace.agree
    assert ex.trace.value.item() == pytest.approx(y.item(), rel=1e-5, abs=1e-6)


def test_non_scalar_expression_is_summed_and_said():
    ex = explain_expression("W @ x", {"x": "[1, 2]"}, {"W": "[[1, 2], [3, 4]]"})
    assert ex.trace.value.item() == 5.0 + 11.0
    assert any("not a scalar" in n and "sum" in n for n in ex.notes)
    assert ex.trace.leaf_grads["W"].tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_unused_parameter_is_noted():
    ex = explain_expression("w * x", {"x": 2.0}, {"w": 1.0, "q": 3.0})
    assert "q" not in ex.trace.leaf_grads
    assert any("q" in n and "do not affect" in n for n in ex.notes)


def test_explain_model_small_mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1))
    ex = explain_model(net, ["s", "t"], None, {"s": 0.3, "t": -1.0})
    names = dict(net.named_parameters())
    x = torch.tensor([[0.3, -1.0]])
    ref = torch.autograd.grad(net(x)[0, 0], list(names.values()))
    for name, r in zip(names, ref, strict=True):
        torch.testing.assert_close(ex.trace.leaf_grads[name], r)
    assert ex.trace.agree
    assert all(p.grad is None for p in net.parameters())
    assert net.training  # mode restored
    assert any(s.output == "0:Linear" for s in ex.trace.steps)
