"""Pure math on a stack of M fully connected networks: forward, backward, losses, penalties.

Network m's layer k computes ``act(z @ W_k[m] + b_k[m])`` (the last layer is linear), with
``W_k[m]`` shaped (in, out) as on the lecture's slides. The stack keeps all parameters of all
M networks in one flat tensor ``theta`` of shape (M, P) and reads the layers as views of it
(:class:`StackLayout`), so one batched product runs layer k of every network and the
optimizers update all parameters of all networks with a handful of element-wise calls.
:func:`forward`/:func:`backward` take row-major batches (M, B, features); the training step's
:func:`forward_step`/:func:`backward_step` take feature-major ones (M, features, B) with the
biases inside the products (:class:`StepBuffers`), which run faster.

Gradients are written out by hand (``h^T g`` and ``g W^T`` as batched products, then the very
ATen kernels autograd itself calls for each activation: ``sigmoid_backward``...), which costs
no graph construction per step. ``tests/test_batched.py`` checks them against autograd.

>>> layout = StackLayout([1, 6, 6, 1])
>>> theta = torch.zeros(3, layout.n_params)              # (M, P): three 1-6-6-1 networks
>>> x = torch.zeros(3, 64, 1)                              # (M, B, in)
>>> out, cache = forward(layout.views(theta), x, "sigmoid")
>>> out.shape, flat_grads(backward(layout.views(theta), cache, out, "sigmoid")).shape
(torch.Size([3, 64, 1]), torch.Size([3, 61]))
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from nnfin.models.mlp import ACTIVATION_FUNCTIONS

Layer = tuple[torch.Tensor, torch.Tensor]  # W (M, in, out), b (M, 1, out)
Cache = tuple[list[torch.Tensor], list[torch.Tensor]]
aten = torch.ops.aten

# activations whose backward kernel needs the pre-activation z (the others use the output)
_NEEDS_INPUT = ("elu", "softplus", "gelu", "silu")
LOSSES = ("mse", "sse", "mae", "huber")
_MATVEC_MIN = 16  # from this many inputs on, a one-output layer is faster as multiply-and-sum


class StackLayout:
    """Where layer k's weight and bias sit in a flat (M, P) parameter tensor: W1, b1, W2, b2...

    >>> StackLayout([1, 16, 16, 1]).n_params
    321
    """

    def __init__(self, widths: Sequence[int]) -> None:
        self.widths = list(widths)  # [in, hidden..., out]
        self.slices: list[tuple[int, int, int]] = []  # (offset of W, offset of b, end) per layer
        offset = 0
        for i, o in pairwise(self.widths):
            self.slices.append((offset, offset + i * o, offset + i * o + o))
            offset += i * o + o
        self.n_params = offset

    def views(self, theta: torch.Tensor) -> list[Layer]:
        """``[(W1, b1), ...]``: (M, in, out) and (M, 1, out) views into ``theta`` (M, P)."""
        m = theta.shape[0]
        out = []
        for (i, o), (w0, b0, end) in zip(self._shapes(), self.slices, strict=True):
            out.append((theta[:, w0:b0].view(m, i, o), theta[:, b0:end].view(m, 1, o)))
        return out

    def _shapes(self) -> list[tuple[int, int]]:
        return list(pairwise(self.widths))

    def is_bias(self) -> torch.Tensor:
        """(P,) bool: which flat entries are biases (for a penalty that leaves them out)."""
        mask = torch.zeros(self.n_params, dtype=torch.bool)
        for _, b0, end in self.slices:
            mask[b0:end] = True
        return mask

    def width_mask(self, widths: Sequence[int]) -> torch.Tensor:
        """(P,) 0/1: the entries a smaller network with ``widths`` owns inside this layout.

        Padded units get zero weights in and out and, through this mask, zero gradients, so
        they stay exactly zero and the padded network computes what the small one would.
        """
        mask = torch.zeros(self.n_params, dtype=torch.float64)
        for (i, o), (w0, b0, end), (ri, ro) in zip(self._shapes(), self.slices,
                                                  pairwise(widths), strict=True):
            mask[w0:b0].view(i, o)[:ri, :ro] = 1
            mask[b0:end][:ro] = 1
        return mask


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h @ w + b`` per network: h (M, B, i), w (M, i, o), b (M, 1, o) -> (M, B, o).

    Batched GEMMs are slow for a single input or output column; those are broadcast products.
    """
    if w.shape[1] == 1:  # (M, B, 1) * (M, 1, o)
        return torch.addcmul(b, h, w)
    if w.shape[2] == 1 and w.shape[1] >= _MATVEC_MIN:  # (M, B, i) * (M, 1, i), summed over i
        return (h * w.transpose(1, 2)).sum(2, keepdim=True) + b
    return torch.baddbmm(b, h, w)


def _weight_grad(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``h^T g`` per network: h (M, B, i), g (M, B, o) -> (M, i, o)."""
    if g.shape[2] == 1:  # one output column: (M, B, i) * (M, B, 1), summed over the batch
        return (h * g).sum(1).unsqueeze(2)
    return torch.bmm(h.transpose(1, 2), g)


def forward(layers: Sequence[Layer], x: torch.Tensor, activation: str, *,
            keep: bool = True) -> tuple[torch.Tensor, Cache]:
    """Run every network on its own rows: x (M, B, in) -> (M, B, out).

    With ``keep`` the cache holds each layer's input (and, for activations whose backward
    needs it, the pre-activation) for :func:`backward`.
    """
    act = ACTIVATION_FUNCTIONS[activation]
    inputs: list[torch.Tensor] = []  # input of layer k: x, h1, h2, ...      (M, B, width_k)
    pre: list[torch.Tensor] = []  # pre-activations of the hidden layers     (M, B, width_k+1)
    h = x
    last = len(layers) - 1
    for k, (w, b) in enumerate(layers):
        if keep:
            inputs.append(h)
        z = _linear(h, w, b)
        if k == last:
            return z, (inputs, pre)
        if keep and activation in _NEEDS_INPUT:
            pre.append(z)
        h = act(z)
    raise ValueError("a network needs at least one layer")


def activation_backward(g: torch.Tensor, activation: str, output: torch.Tensor,
                        pre: torch.Tensor | None, *, out: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """d loss / d z from d loss / d act(z), with the kernels autograd uses for each activation
    (into ``out`` when given, which may be ``g`` itself: the kernels are elementwise)."""
    if activation not in _BACKWARD:
        raise ValueError(f"unknown activation {activation!r}")
    op, args, kwargs = _BACKWARD[activation]
    if out is None:
        return op.default(*args(g, output, pre), **kwargs)
    return op.grad_input(*args(g, output, pre), **kwargs, grad_input=out)


_BACKWARD = {  # activation -> (ATen backward op, its arguments from (g, act(z), z), keywords)
    "sigmoid": (aten.sigmoid_backward, lambda g, y, z: (g, y), {}),
    "tanh": (aten.tanh_backward, lambda g, y, z: (g, y), {}),
    "relu": (aten.threshold_backward, lambda g, y, z: (g, y, 0), {}),
    "elu": (aten.elu_backward, lambda g, y, z: (g, 1.0, 1, 1, False, z), {}),
    "softplus": (aten.softplus_backward, lambda g, y, z: (g, z, 1.0, 20.0), {}),
    "gelu": (aten.gelu_backward, lambda g, y, z: (g, z), {"approximate": "none"}),
    "silu": (aten.silu_backward, lambda g, y, z: (g, z), {}),
}


def backward(layers: Sequence[Layer], cache: Cache, g: torch.Tensor, activation: str
             ) -> list[Layer]:
    """``[(dW1, db1), ...]`` from ``g`` = d loss / d output (M, B, out), layer by layer."""
    inputs, pre = cache
    grads: list[Layer] = []
    for k in range(len(layers) - 1, -1, -1):
        w, _ = layers[k]
        h = inputs[k]  # (M, B, i)
        grads.append((_weight_grad(h, g), g.sum(1, keepdim=True)))  # (M, i, o), (M, 1, o)
        if k == 0:
            break
        # g W^T: (M, B, o) x (M, o, i) -> (M, B, i); one output: a broadcast product
        gh = g * w.transpose(1, 2) if w.shape[2] == 1 else torch.bmm(g, w.transpose(1, 2))
        g = activation_backward(gh, activation, h, pre[k - 1] if pre else None)
    return grads[::-1]


# ------------------------------------------------------- training steps: biases in the GEMMs


class StepBuffers:
    """Views and buffers of a training step for :func:`forward_step`/:func:`backward_step`.

    A training step holds a batch feature-major: (M, features, B), one column per row of the
    batch, so that every activation works on contiguous memory and the products have the
    shapes batched GEMMs run fastest at here. Layer k's weight and bias sit next to each other
    in ``theta`` (W_k, then b_k), so ``theta[:, W_k start : b_k end]`` viewed as
    (M, in + 1, out) is W_k with b_k as its last row. A hidden layer's output goes into an
    (M, width + 1, B) buffer whose last row is 1: the next layer is then one ``bmm`` (the bias
    comes with the product) and its weight and bias gradients are one ``bmm`` too
    (``[h; 1] g^T``), where separate bias terms would cost an addition and a reduction each.
    The views stay valid while ``theta`` is updated in place.

    >>> layout = StackLayout([1, 6, 6, 1])
    >>> theta = torch.zeros(3, layout.n_params)
    >>> buffers = StepBuffers(layout, 64, theta)
    >>> [tuple(w.shape) for w in buffers.weights], tuple(buffers.hidden[0].shape)
    ([(3, 2, 6), (3, 7, 6), (3, 7, 1)], (3, 7, 64))
    """

    def __init__(self, layout: StackLayout, batch: int, theta: torch.Tensor) -> None:
        m = theta.shape[0]
        self.layout, self.m, self.batch = layout, m, batch
        new = {"device": theta.device, "dtype": theta.dtype}
        self.weights = [theta[:, w0:end].view(m, i + 1, o)  # [W_k; b_k]: (M, in + 1, out)
                        for (i, o), (w0, _, end) in zip(layout._shapes(), layout.slices,
                                                         strict=True)]
        self.weights_t = [w.transpose(1, 2) for w in self.weights]  # (M, out, in + 1)
        self.no_bias = [w[:, :-1] for w in self.weights]  # W_k: (M, in, out)
        self.hidden = [torch.ones(m, w + 1, batch, **new) for w in layout.widths[1:-1]]
        self.act = [h[:, :-1] for h in self.hidden]  # act(z_k) inside [h_k; 1]: (M, width, B)
        self.hidden_t = [h.transpose(1, 2) for h in self.hidden]  # (M, B, width + 1)
        self.z = [torch.empty(m, o, batch, **new) for o in layout.widths[1:]]
        # backward: d loss / d z_k of each hidden layer (M, width, B), overwritten in place by
        # the activation's backward, and d[W_k; b_k] per layer, contiguous (a product writes
        # a strided column block of an (M, P) tensor 2x slower than its own buffer); a
        # one-output layer's is computed as (M, 1, in + 1), the same memory
        self.g_scaled = torch.empty(m, layout.widths[-1], batch, **new)  # scale * d / d output
        self.dz = [torch.empty(m, w, batch, **new) for w in layout.widths[1:-1]]
        self.dz_t = [d.transpose(1, 2) for d in self.dz]  # (M, B, width)
        self.grad_out = [torch.empty(m, 1, i + 1, **new) if o == 1 else
                         torch.empty(m, i + 1, o, **new) for i, o in layout._shapes()]
        self.grads = [g.view(m, i + 1, o) for g, (i, o) in zip(self.grad_out, layout._shapes(),
                                                               strict=True)]
        self.grads_flat = [g.view(m, -1) for g in self.grad_out]  # for one (M, P) gradient


def _act_into(activation: str, z: torch.Tensor, out: torch.Tensor) -> None:
    """``out[...] = act(z)`` with one kernel where torch has an ``out=`` form."""
    if activation in ("sigmoid", "tanh"):
        getattr(torch, activation)(z, out=out)
    elif activation == "relu":
        torch.clamp(z, min=0, out=out)
    else:
        out.copy_(ACTIVATION_FUNCTIONS[activation](z))


def forward_step(buffers: StepBuffers, x: torch.Tensor, activation: str, *,
                 minus_target: torch.Tensor | None = None, out: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, Cache]:
    """:func:`forward` for a training step, feature-major (see :class:`StepBuffers`): ``x``
    (M, in + 1, B) with a last row of ones -> the outputs (M, out, B), a buffer of ``buffers``
    that the next step overwrites. With ``minus_target`` (M, out, B), the negated targets,
    the last product adds it and gives the errors ``pred - target`` instead (into ``out``)."""
    inputs: list[torch.Tensor] = []  # [x; 1], [h1; 1], ...
    pre: list[torch.Tensor] = []
    h = x
    last = len(buffers.weights) - 1
    for k, wt in enumerate(buffers.weights_t):
        inputs.append(h)
        if k == last:
            if minus_target is not None:
                return torch.baddbmm(minus_target, wt, h, out=out), (inputs, pre)
            return torch.bmm(wt, h, out=buffers.z[k]), (inputs, pre)
        z = torch.bmm(wt, h, out=buffers.z[k])
        if activation in _NEEDS_INPUT:
            pre.append(z)
        h = buffers.hidden[k]
        _act_into(activation, z, buffers.act[k])
    raise ValueError("a network needs at least one layer")


def backward_step(buffers: StepBuffers, cache: Cache, g: torch.Tensor, activation: str,
                  scale: float = 1.0) -> list[torch.Tensor]:
    """``[d[W_k; b_k]]``, (M, in + 1, out) each (the views ``buffers.grads``, overwritten by
    the next call), from d loss / d output = ``scale * g`` (M, out, B). Every product and
    activation backward writes into a buffer of ``buffers``."""
    inputs, pre = cache
    last = len(buffers.weights) - 1
    if scale != 1.0:  # one small product here; then every product is a plain bmm
        g = torch.mul(g, scale, out=buffers.g_scaled)
    for k in range(last, -1, -1):
        h = inputs[k]  # (M, in + 1, B)
        if g.shape[1] == 1:  # one output: (g [h; 1]^T)^T, the same memory, is faster
            torch.bmm(g, buffers.hidden_t[k - 1] if k else h.transpose(1, 2),
                      out=buffers.grad_out[k])
        else:  # [h; 1] g^T
            torch.bmm(h, buffers.dz_t[k] if k < last else g.transpose(1, 2),
                      out=buffers.grad_out[k])
        if k == 0:
            break
        dz = buffers.dz[k - 1]  # W g: (M, in, B); for one output a broadcast product
        w = buffers.no_bias[k]
        torch.mul(w, g, out=dz) if g.shape[1] == 1 else torch.bmm(w, g, out=dz)
        g = activation_backward(dz, activation, buffers.act[k - 1], pre[k - 1] if pre else None,
                                out=dz)
    return buffers.grads


def forward_autograd(theta: torch.Tensor, layout: StackLayout, x: torch.Tensor, activation: str
                     ) -> torch.Tensor:
    """The stack's forward as autograd operations on ``theta`` (M, P), feature-major: ``x``
    (M, in, B) -> (M, out, B), layer k ``act(W_k^T h + b_k)`` as one ``baddbmm`` for all
    networks. For what the hand-written kernels do not give: second derivatives
    (differential training takes ``autograd.grad(..., create_graph=True)`` through it)."""
    m = theta.shape[0]
    act = ACTIVATION_FUNCTIONS[activation]
    h = x
    last = len(layout.slices) - 1
    for k, ((i, o), (w0, b0, end)) in enumerate(zip(layout._shapes(), layout.slices, strict=True)):
        z = torch.baddbmm(theta[:, b0:end].view(m, o, 1), theta[:, w0:b0].view(m, i, o).transpose(1, 2), h)
        h = z if k == last else act(z)
    return h


def activation_slope(activation: str, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor | None:
    """``act'(z)`` as autograd operations (``h = act(z)``), in the form torch's backward kernel
    of the activation computes it; ``None`` for the activations left to autograd's double
    backward (elu, gelu, silu)."""
    if activation == "sigmoid":
        return (1 - h) * h
    if activation == "tanh":
        return 1 - h * h
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "softplus":  # F.softplus: beta 1, threshold 20 (linear above it: slope 1)
        slope = torch.sigmoid(z)
        return torch.where(z > 20.0, 1.0, slope) if bool((z > 20.0).any()) else slope
    return None


def forward_with_input_grad(theta: torch.Tensor, layout: StackLayout, x: torch.Tensor,
                            activation: str, index: Sequence[int] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(outputs (M, 1, B), d output / d x (M, k, B))`` for one-output networks, as autograd
    operations of first order: the input derivative is the backward pass written out
    (``a = W_L``, then ``a = W_k (a * act'(z_k))`` down the layers; inputs ``index`` only at the
    first layer), so the gradient of a loss on it needs no double backward. ``None`` where
    :func:`activation_slope` has no form for ``activation``."""
    m = theta.shape[0]
    act = ACTIVATION_FUNCTIONS[activation]
    h = x
    slopes: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    last = len(layout.slices) - 1
    for k, ((i, o), (w0, b0, end)) in enumerate(zip(layout._shapes(), layout.slices, strict=True)):
        w = theta[:, w0:b0].view(m, i, o)
        weights.append(w)
        z = torch.baddbmm(theta[:, b0:end].view(m, o, 1), w.transpose(1, 2), h)
        if k == last:
            break
        h = act(z)
        slope = activation_slope(activation, z, h)
        if slope is None:
            return None
        slopes.append(slope)
    a = weights[-1]  # d out / d h_{L-1}: (M, width, 1), the same for every row
    for k in range(last - 1, -1, -1):
        w = weights[k]
        if k == 0 and index is not None:
            w = w[:, list(index)]
        a = torch.bmm(w, a * slopes[k])  # (M, width_k, B)
    return z, a


def flat_grads(grads: Sequence[Layer] | Sequence[torch.Tensor], out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Layer gradients as one (M, P) tensor in the layout's order W1, b1, W2, b2, ...
    (written into ``out`` when given); ``grads`` holds ``(dW, db)`` pairs or, from
    :func:`backward_step`, one ``d[W; b]`` per layer."""
    if isinstance(grads[0], torch.Tensor):
        m = grads[0].shape[0]
        parts = [t.reshape(m, -1) for t in grads]
    else:
        m = grads[0][0].shape[0]
        parts = [t.reshape(m, -1) for pair in grads for t in pair]
    return torch.cat(parts, dim=1) if out is None else torch.cat(parts, dim=1, out=out)


def loss_and_grad(pred: torch.Tensor, target: torch.Tensor, kind: str, *,
                  count: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                  huber_delta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-network loss (M,) and its gradient d loss_m / d pred (M, B, out).

    ``valid`` (M, B) marks real rows (a short last batch is padded); ``count`` (M,) is the
    number of real rows per network. Means are over real rows and outputs, like the
    ``reduction="mean"`` losses of :mod:`nnfin.train.losses`; ``sse`` sums, as the lecture.
    """
    valid = None if valid is None else valid.unsqueeze(2)
    diff, grad = _errors_and_grad(pred, target, kind, count, valid, huber_delta)
    return step_losses(diff, kind, count=count, huber_delta=huber_delta), grad


def errors_grad(diff: torch.Tensor, kind: str, *, count: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, huber_delta: float = 1.0,
                feature_major: bool = False) -> tuple[torch.Tensor, float]:
    """``(g, scale)`` with d loss_m / d pred ``= scale * g`` as :func:`loss_and_grad` computes
    it, from the errors ``diff = pred - target`` (zeroed here, in place, on padded rows:
    ``valid`` False), without the loss: a training loop keeps ``diff`` and gets the losses
    from :func:`step_losses` once an epoch. A constant factor (MSE of full batches, SSE) is
    left to ``scale``, for :func:`backward_step` to apply once (into a buffer of its own).
    ``feature_major``: ``diff`` is (M, out, B), as :func:`forward_step` gives it."""
    if valid is not None:
        diff.masked_fill_(~valid.unsqueeze(1 if feature_major else 2), 0.0)
    if kind == "sse":
        return diff, 2.0
    if kind == "mse" and count is None:
        b, o = diff.shape[1:]
        return diff, 2.0 / (b * o)  # torch's own 2 / N, as a Python float
    return _grad_of_errors(diff, kind, count, huber_delta, feature_major), 1.0


def _errors_and_grad(pred: torch.Tensor, target: torch.Tensor, kind: str,
                     count: torch.Tensor | None, valid: torch.Tensor | None, huber_delta: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred - target`` zeroed where ``valid`` (broadcastable to ``pred``) is False ``,
    d loss / d pred)``."""
    diff = pred - target
    if valid is not None:
        diff = diff.masked_fill(~valid, 0.0)
    return diff, _grad_of_errors(diff, kind, count, huber_delta, feature_major=False)


def _grad_of_errors(diff: torch.Tensor, kind: str, count: torch.Tensor | None,
                    huber_delta: float, feature_major: bool) -> torch.Tensor:
    if kind == "sse":
        return 2.0 * diff
    m, b, o = diff.shape
    if feature_major:
        b, o = o, b
    if count is None and kind == "mse":  # full batches: torch's own 2 / N, as a Python float
        return diff * (2.0 / (b * o))
    n = (count if count is not None else diff.new_full((m,), float(b))).clamp(min=1) * o
    norm = (1.0 / n).view(m, 1, 1)
    if kind == "mse":
        return (2.0 * diff) * norm
    if kind == "mae":
        return diff.sign() * norm
    if kind == "huber":
        return diff.clamp(-huber_delta, huber_delta) * norm
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def step_losses(diff: torch.Tensor, kind: str, *, count: torch.Tensor | None = None,
                huber_delta: float = 1.0, feature_major: bool = False) -> torch.Tensor:
    """The losses of :func:`loss_and_grad` from stored errors ``diff`` (K, B, out), or
    (K, out, B) if ``feature_major``: (K,)."""
    if kind == "sse":
        return diff.square().sum((1, 2))
    k, b, o = diff.shape
    if feature_major:
        b, o = o, b
    if count is None and kind == "mse":
        return diff.square().sum((1, 2)) / (b * o)
    n = (count if count is not None else diff.new_full((k,), float(b))).clamp(min=1) * o
    if kind == "mse":
        return diff.square().sum((1, 2)) / n
    if kind == "mae":
        return diff.abs().sum((1, 2)) / n
    if kind == "huber":
        a = diff.abs()
        elem = torch.where(a < huber_delta, 0.5 * diff.square(), huber_delta * (a - 0.5 * huber_delta))
        return elem.sum((1, 2)) / n
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def add_penalty(grad: torch.Tensor, theta: torch.Tensor, l1: torch.Tensor | None,
                l2: torch.Tensor | None) -> torch.Tensor:
    """Gradient of ``loss + l1 * sum|w| + l2 * sum w^2``: adds ``l1 sign(w) + l2 (2 w)``.

    ``l1``/``l2`` are (M, P) or (M, 1) lambdas; zero where a penalty leaves biases out.
    """
    if l1 is not None:
        grad = grad + l1 * theta.sign()
    if l2 is not None:
        grad = grad + l2 * (2.0 * theta)
    return grad


def add_penalty_(grad: torch.Tensor, theta: torch.Tensor, l1: torch.Tensor | None,
                 l2_twice: torch.Tensor | None) -> torch.Tensor:
    """:func:`add_penalty` in place, with ``l2_twice = 2 * l2`` precomputed (doubling is exact)."""
    if l1 is not None:
        grad.addcmul_(l1, theta.sign())
    if l2_twice is not None:
        grad.addcmul_(l2_twice, theta)
    return grad


def penalty_value(theta: torch.Tensor, l1: torch.Tensor | None, l2: torch.Tensor | None
                  ) -> torch.Tensor:
    """``l1 * sum|w| + l2 * sum w^2`` per network, (M,)."""
    total = theta.new_zeros(theta.shape[0])
    if l1 is not None:
        total = total + (l1 * theta.abs()).sum(1)
    if l2 is not None:
        total = total + (l2 * theta.square()).sum(1)
    return total
