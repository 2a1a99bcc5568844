"""Explain backpropagation: walk a backward graph node by node, as the lecture's slides do.

* :func:`trace` calls every ``grad_fn`` node with its upstream gradient, follows
  ``next_functions`` down to the leaves and checks the result against autograd;
* :func:`lecture_example`, :func:`explain_expression` and :func:`explain_model` build an
  :class:`Explanation` (forward values + the walk) for the slides' ``y = cos(w x + b)``,
  for a safe user expression, or for one prediction of a trained network;
* :func:`show` prints it as tables and :func:`write_graph` draws the graph.

>>> import torch
>>> from nnfin.explain import trace
>>> w = torch.tensor(1.0, requires_grad=True)
>>> t = trace(torch.cos(w * 0.5 + (torch.pi / 2 - 0.5)), names={"w": w})
>>> round(t.leaf_grads["w"].item(), 4), t.agree
(-0.5, True)
"""

from nnfin.explain.core import (
    LECTURE_EXPRESSION,
    Explanation,
    ForwardValue,
    explain_expression,
    lecture_example,
)
from nnfin.explain.expr import FUNCTIONS, Evaluation, evaluate, parse_assignment, parse_value
from nnfin.explain.graph import dot_source, write_graph
from nnfin.explain.model import explain_model, explain_run
from nnfin.explain.render import format_tensor, show
from nnfin.explain.trace import LocalGrad, Step, Trace, trace

__all__ = [
    "FUNCTIONS",
    "LECTURE_EXPRESSION",
    "Evaluation",
    "Explanation",
    "ForwardValue",
    "LocalGrad",
    "Step",
    "Trace",
    "dot_source",
    "evaluate",
    "explain_expression",
    "explain_model",
    "explain_run",
    "format_tensor",
    "lecture_example",
    "parse_assignment",
    "parse_value",
    "show",
    "trace",
    "write_graph",
]
