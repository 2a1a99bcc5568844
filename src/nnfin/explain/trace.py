"""Walk a backward graph by hand, the way the lecture's step-by-step slides do.

Starting from ``y.grad_fn`` each node is *called* with its upstream gradient
``dy/d(node output)``; it returns the gradients for the entries of its
``next_functions``, which become the upstream gradients of the next nodes. Gradients that
reach the same node along several paths are summed before the node is called (as the
autograd engine does), so a leaf used twice gets the sum of both contributions.

``AccumulateGrad`` nodes (the leaves) are *not* called: calling one would add to the
leaf's ``.grad``. Their upstream gradient is recorded as the leaf gradient instead.
The result is checked against ``torch.autograd.grad(..., retain_graph=True)``, which
leaves both ``.grad`` and the graph untouched.

>>> import torch
>>> x = torch.tensor(0.5)
>>> w = torch.tensor(1.0, requires_grad=True)
>>> b = torch.tensor(0.5 * torch.pi - 0.5, requires_grad=True)
>>> y = torch.cos(w * x + b)
>>> t = trace(y, names={"w": w, "b": b})
>>> [s.node for s in t.steps]
['CosBackward0', 'AddBackward0', 'AccumulateGrad', 'MulBackward0', 'AccumulateGrad']
>>> round(t.leaf_grads["w"].item(), 4), t.agree
(-0.5, True)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nnfin.errors import DataError

__all__ = ["LocalGrad", "Step", "Trace", "trace"]

_NO_GRAD = "(needs no grad)"


@dataclass(frozen=True)
class LocalGrad:
    """One gradient a node produced, for one entry of its ``next_functions``.

    ``target`` names the tensor the gradient belongs to (``"z"``, ``"w"``); for an input
    that needs no gradient (a ``None`` entry in ``next_functions``) it is
    ``"(needs no grad)"`` and ``next_index`` is ``None``.
    """

    target: str
    grad: torch.Tensor | None
    next_index: int | None  # index in Trace.steps of the node that receives it


@dataclass(frozen=True)
class Step:
    """One node of the backward graph, called once with its (summed) upstream gradient.

    ``upstream`` holds ``dy/d(output)`` for each output of the forward operation (almost
    always one); ``produced`` the gradients the call returned, one per ``next_functions``
    entry; ``leaves`` the names of the leaves this node's paths reach; ``leaf`` the leaf
    itself for an ``AccumulateGrad`` node; ``access`` the Python expression that reaches
    the node from ``y`` (``"y.grad_fn.next_functions[0][0]"``); ``contributions`` how many
    gradients were summed into ``upstream`` (> 1 where several paths meet).
    """

    index: int
    node: str
    output: str
    access: str
    upstream: tuple[torch.Tensor | None, ...]
    produced: tuple[LocalGrad, ...]
    leaves: tuple[str, ...]
    leaf: str | None
    contributions: int
    depth: int

    @property
    def upstream_grad(self) -> torch.Tensor | None:
        """The upstream gradient of a one-output node (the usual case)."""
        return self.upstream[0] if self.upstream else None


@dataclass
class Trace:
    """The steps of a hand-walked backward pass and the check against autograd.

    ``leaf_grads`` are the gradients the walk delivered to the leaves; ``reference_grads``
    those of ``torch.autograd.grad``; ``agree`` says whether they match within
    ``rtol``/``atol`` and ``max_abs_diff`` by how much they differ at most.
    """

    output: str
    value: torch.Tensor
    steps: list[Step]
    leaf_grads: dict[str, torch.Tensor]
    reference_grads: dict[str, torch.Tensor]
    agree: bool
    max_abs_diff: float
    leaves: dict[str, torch.Tensor] = field(default_factory=dict)

    def grad_label(self, name: str) -> str:
        """``"dy/dname"`` (parenthesised when the name is an expression)."""
        inner = name if name.isidentifier() else f"({name})"
        return f"d{self.output}/d{inner}"

    def step_for(self, output: str) -> Step:
        """The step whose node produced the tensor called ``output``."""
        for step in self.steps:
            if step.output == output:
                return step
        raise KeyError(output)

    def gradient(self, name: str) -> torch.Tensor:
        """``dy/d(name)`` for a named intermediate or leaf (the upstream gradient of its node).

        >>> import torch
        >>> w = torch.tensor(2.0, requires_grad=True)
        >>> t = trace(w * w, names={"w": w})
        >>> t.gradient("w").item()
        4.0
        """
        grad = self.step_for(name).upstream_grad
        if grad is None:
            raise KeyError(name)
        return grad


def _node_name(node: Any) -> str:
    name = node.name() if hasattr(node, "name") else type(node).__name__
    return name.rsplit("::", 1)[-1]


def _num_outputs(node: Any, seen_inputs: set[int]) -> int:
    meta = getattr(node, "_input_metadata", None)
    if meta is not None:
        return len(meta)
    return max(seen_inputs, default=0) + 1


def _fill_missing(node: Any, k: int) -> torch.Tensor | None:
    """A zero gradient for an unused output, where the node tells its shape; else None."""
    meta = getattr(node, "_input_metadata", None)
    if meta is None or k >= len(meta):
        return None
    m = meta[k]
    return torch.zeros(tuple(m.shape), dtype=m.dtype, device=m.device)


def _conform(grad: torch.Tensor | None, node: Any, input_nr: int) -> torch.Tensor | None:
    """Reduce a broadcast gradient to the shape (and dtype) the receiving node expects.

    The autograd engine does the same between nodes: ``AddmmBackward0`` hands a bias of
    shape (3,) a gradient of shape (1, 3), which is summed over the broadcast dimension.
    """
    meta = getattr(node, "_input_metadata", None)
    if grad is None or meta is None or input_nr >= len(meta):
        return grad
    shape, dtype = tuple(meta[input_nr].shape), meta[input_nr].dtype
    if tuple(grad.shape) != shape:
        try:
            grad = grad.sum_to_size(shape)
        except RuntimeError:
            if grad.numel() != math.prod(shape):
                raise
            grad = grad.reshape(shape)
    if grad.dtype != dtype and grad.is_floating_point():
        grad = grad.to(dtype)
    return grad


def _call(node: Any, grads: list[torch.Tensor | None], name: str) -> tuple[Any, ...]:
    with torch.no_grad():
        try:
            out = node(*grads)
        except (TypeError, RuntimeError):
            filled = [g if g is not None else _fill_missing(node, k) for k, g in enumerate(grads)]
            try:
                out = node(*filled)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"cannot call backward node {name}: {first}") from None
    return out if isinstance(out, tuple) else (out,)


def _names_by_identity(names: Mapping[str, torch.Tensor] | None) -> tuple[dict, dict]:
    """Split user names into {id(leaf): name} and {id(grad_fn): name}."""
    leaf_names: dict[int, str] = {}
    node_names: dict[int, str] = {}
    for key, tensor in (names or {}).items():
        if not isinstance(tensor, torch.Tensor):
            continue
        if tensor.grad_fn is not None:
            node_names.setdefault(id(tensor.grad_fn), key)
        elif tensor.requires_grad:
            leaf_names.setdefault(id(tensor), key)
    return leaf_names, node_names


def _discover(root: Any) -> tuple[list[Any], dict[int, int]]:
    """All nodes reachable from ``root`` and, per node, the number of edges into it."""
    nodes, deps, stack, seen = [], {id(root): 0}, [root], {id(root)}
    while stack:
        node = stack.pop()
        nodes.append(node)
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            deps[id(nxt)] = deps.get(id(nxt), 0) + 1
            if id(nxt) not in seen:
                seen.add(id(nxt))
                stack.append(nxt)
    return nodes, deps


def _seq(node: Any) -> int:
    try:
        return int(node._sequence_nr())
    except (AttributeError, RuntimeError):
        return 0


def trace(
    y: torch.Tensor,
    names: Mapping[str, torch.Tensor] | None = None,
    *,
    output: str = "y",
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> Trace:
    """Walk the backward graph of the scalar ``y`` node by node and check it against autograd.

    ``names`` maps names to tensors of the computation: leaves (``w``) name the leaf
    gradients, intermediates (``z``) name the node that produced them. Unnamed leaves are
    called ``leaf0, leaf1, ...`` and unnamed intermediates ``t1, t2, ...``. Neither
    ``.grad`` nor the graph of ``y`` is changed.

    >>> import torch
    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> t = trace((w * w).sum(), names={"w": w})
    >>> t.leaf_grads["w"].tolist(), t.agree
    ([2.0, 4.0], True)
    """
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{output} must be a torch.Tensor, got {type(y).__name__!r}")
    if y.numel() != 1:
        raise DataError(
            f"{output} has shape {list(y.shape)}; a backward walk starts from a scalar "
            f"(sum it or pick one element first)"
        )
    if not y.requires_grad:
        raise DataError(f"{output} = {y.item()!r} does not depend on any tensor that requires grad")
    leaf_names, node_names = _names_by_identity(names)
    value = y.detach().clone()
    if y.grad_fn is None:  # y is itself a leaf
        name = leaf_names.get(id(y), "leaf0")
        one = torch.ones_like(y).detach()
        return Trace(output, value, [], {name: one}, {name: one.clone()}, True, 0.0, {name: y})

    root = y.grad_fn
    _, deps = _discover(root)
    pending: dict[int, list[torch.Tensor | None]] = {id(root): [torch.ones_like(y).detach()]}
    counts: dict[int, int] = {id(root): 1}
    access: dict[int, str] = {id(root): f"{output}.grad_fn"}
    depth: dict[int, int] = {id(root): 0}
    labels: dict[int, str] = {}
    leaf_tensors: dict[str, torch.Tensor] = {}
    unnamed = [0]

    def label(node: Any) -> str:
        if id(node) not in labels:
            if _node_name(node) == "AccumulateGrad":
                var = node.variable
                labels[id(node)] = leaf_names.get(id(var), f"leaf{len(leaf_tensors)}")
                leaf_tensors[labels[id(node)]] = var
            elif node is root:
                labels[id(node)] = node_names.get(id(node), output)
            elif id(node) in node_names:
                labels[id(node)] = node_names[id(node)]
            else:
                unnamed[0] += 1
                labels[id(node)] = f"t{unnamed[0]}"
        return labels[id(node)]

    label(root)
    heap: list[tuple[int, int, Any]] = [(-_seq(root), 0, root)]
    order = 0
    raw_steps: list[dict[str, Any]] = []
    index_of: dict[int, int] = {}
    while heap:
        _, _, node = heapq.heappop(heap)
        grads = pending.pop(id(node))
        name = _node_name(node)
        is_leaf = name == "AccumulateGrad"
        produced: list[tuple[str, torch.Tensor | None, Any]] = []
        if not is_leaf:
            inputs_seen = {k for k, g in enumerate(grads) if g is not None}
            n_out = _num_outputs(node, inputs_seen)
            grads = grads + [None] * (n_out - len(grads))
            outs = _call(node, grads, name)
            for k, (nxt, input_nr) in enumerate(node.next_functions):
                g = outs[k] if k < len(outs) else None
                if nxt is None:
                    produced.append((_NO_GRAD, g, None))
                    continue
                g = _conform(g, nxt, input_nr)
                produced.append((label(nxt), g, nxt))
                buf = pending.setdefault(id(nxt), [])
                buf.extend([None] * (input_nr + 1 - len(buf)))
                if g is not None:
                    g = g.detach()
                    buf[input_nr] = g if buf[input_nr] is None else buf[input_nr] + g
                counts[id(nxt)] = counts.get(id(nxt), 0) + 1
                access.setdefault(id(nxt), f"{access[id(node)]}.next_functions[{k}][0]")
                depth[id(nxt)] = max(depth.get(id(nxt), 0), depth[id(node)] + 1)
                deps[id(nxt)] -= 1
                if deps[id(nxt)] == 0:
                    order += 1
                    heapq.heappush(heap, (-_seq(nxt), order, nxt))
        index_of[id(node)] = len(raw_steps)
        raw_steps.append(dict(node=node, name=name, grads=tuple(grads), produced=produced,
                              is_leaf=is_leaf))

    reach: dict[int, set[str]] = {}
    for raw in reversed(raw_steps):  # children always come after parents
        node = raw["node"]
        found = {label(node)} if raw["is_leaf"] else set()
        for _, _, nxt in raw["produced"]:
            if nxt is not None:
                found |= reach[id(nxt)]
        reach[id(node)] = found
    steps = [
        Step(
            index=i,
            node=raw["name"],
            output=label(raw["node"]),
            access=access[id(raw["node"])],
            upstream=raw["grads"],
            produced=tuple(
                LocalGrad(t, g, index_of[id(n)] if n is not None else None)
                for t, g, n in raw["produced"]
            ),
            leaves=tuple(sorted(reach[id(raw["node"])])),
            leaf=label(raw["node"]) if raw["is_leaf"] else None,
            contributions=counts[id(raw["node"])],
            depth=depth[id(raw["node"])],
        )
        for i, raw in enumerate(raw_steps)
    ]
    leaf_grads = {s.leaf: s.upstream_grad for s in steps if s.leaf is not None}
    leaf_grads = {k: (g if g is not None else torch.zeros_like(leaf_tensors[k]).detach())
                  for k, g in leaf_grads.items()}
    reference, agree, diff = _check(y, leaf_tensors, leaf_grads, rtol, atol)
    return Trace(output, value, steps, leaf_grads, reference, agree, diff, leaf_tensors)


def _check(
    y: torch.Tensor,
    leaves: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    rtol: float,
    atol: float,
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Reference gradients from ``torch.autograd.grad`` (graph kept, ``.grad`` untouched)."""
    names = list(leaves)
    if not names:
        return {}, True, 0.0
    try:
        ref = torch.autograd.grad(y, [leaves[n] for n in names], retain_graph=True,
                                  allow_unused=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"autograd cannot differentiate {y!r}: {first}") from None
    reference = {n: (r if r is not None else torch.zeros_like(leaves[n])).detach()
                 for n, r in zip(names, ref, strict=True)}
    agree, diff = True, 0.0
    for n in names:
        a, b = grads[n], reference[n]
        if a.shape != b.shape:
            return reference, False, math.inf
        if a.numel():
            d = (a.double() - b.double()).abs().nan_to_num(nan=math.inf)
            both_nan = a.isnan() & b.isnan()
            d = torch.where(both_nan, torch.zeros_like(d), d)
            diff = max(diff, float(d.max()))
        agree = agree and torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    return reference, agree, diff
