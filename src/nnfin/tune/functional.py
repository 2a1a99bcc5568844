"""Pure math on a stack of M fully connected networks: forward, backward, losses, penalties.

Network m's layer k computes ``act(z @ W_k[m] + b_k[m])`` (the last layer is linear), with
``W_k[m]`` shaped (in, out) as on the lecture's slides. The stack keeps all parameters of all
M networks in one flat tensor ``theta`` of shape (M, P) and reads the layers as views of it
(:class:`StackLayout`), so one ``torch.baddbmm`` runs layer k of every network and the
optimizers update all parameters of all networks with a handful of element-wise calls.

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
                        pre: torch.Tensor | None) -> torch.Tensor:
    """d loss / d z from d loss / d act(z), with the kernels autograd uses for each activation."""
    if activation == "sigmoid":
        return aten.sigmoid_backward(g, output)
    if activation == "tanh":
        return aten.tanh_backward(g, output)
    if activation == "relu":
        return aten.threshold_backward(g, output, 0)
    if activation == "elu":
        return aten.elu_backward(g, 1.0, 1, 1, False, pre)
    if activation == "softplus":
        return aten.softplus_backward(g, pre, 1.0, 20.0)
    if activation == "gelu":
        return aten.gelu_backward(g, pre, approximate="none")
    if activation == "silu":
        return aten.silu_backward(g, pre)
    raise ValueError(f"unknown activation {activation!r}")


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
    """Per-stack buffers of a training step for :func:`forward_step`/:func:`backward_step`.

    Layer k's weight and bias sit next to each other in ``theta`` (W_k, then b_k), so
    ``theta[:, W_k start : b_k end]`` viewed as (M, in + 1, out) is W_k with b_k as its last
    row. A hidden layer's output is written into an (M, B, width + 1) buffer whose last column
    is 1: the next layer is then one ``bmm`` (the bias comes with the product) and its weight
    and bias gradients are one ``bmm`` too (``[h, 1]^T g``), where separate bias terms would
    cost an addition and a reduction each.

    >>> layout = StackLayout([1, 6, 6, 1])
    >>> theta = torch.zeros(3, layout.n_params)
    >>> buffers = StepBuffers(layout, 3, 64, theta)
    >>> [tuple(w.shape) for w in buffers.weights(theta)]
    [(3, 2, 6), (3, 7, 6), (3, 7, 1)]
    """

    def __init__(self, layout: StackLayout, m: int, batch: int, like: torch.Tensor) -> None:
        self.layout, self.m, self.batch = layout, m, batch
        self.hidden = [torch.ones(m, batch, w + 1, device=like.device, dtype=like.dtype)
                       for w in layout.widths[1:-1]]

    def weights(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """``[W_k; b_k]`` as (M, in + 1, out) views of ``theta`` (M, P)."""
        m = theta.shape[0]
        return [theta[:, w0:end].view(m, i + 1, o)
                for (i, o), (w0, _, end) in zip(self.layout._shapes(), self.layout.slices,
                                                 strict=True)]


def _act_into(activation: str, z: torch.Tensor, out: torch.Tensor) -> None:
    """``out[...] = act(z)`` with one kernel where torch has an ``out=`` form."""
    if activation in ("sigmoid", "tanh"):
        getattr(torch, activation)(z, out=out)
    elif activation == "relu":
        torch.clamp(z, min=0, out=out)
    else:
        out.copy_(ACTIVATION_FUNCTIONS[activation](z))


def forward_step(weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str,
                 buffers: StepBuffers) -> tuple[torch.Tensor, Cache]:
    """:func:`forward` for a training step with :class:`StepBuffers` (biases inside the
    products); ``x`` is (M, B, in + 1) with a last column of ones."""
    inputs: list[torch.Tensor] = []  # [x, 1], [h1, 1], ...
    pre: list[torch.Tensor] = []
    h = x
    last = len(weights) - 1
    for k, w in enumerate(weights):
        inputs.append(h)
        one_input = k == 0 and w.shape[1] == 2  # a broadcast product beats a K = 2 GEMM
        z = torch.addcmul(w[:, 1:], h[..., :1], w[:, :1]) if one_input else torch.bmm(h, w)
        if k == last:
            return z, (inputs, pre)
        if activation in _NEEDS_INPUT:
            pre.append(z)
        h = buffers.hidden[k]
        _act_into(activation, z, h[..., :-1])
    raise ValueError("a network needs at least one layer")


def backward_step(weights: Sequence[torch.Tensor], cache: Cache, g: torch.Tensor,
                  activation: str) -> list[torch.Tensor]:
    """``[d[W_k; b_k]]``, (M, in + 1, out) each, from ``g`` = d loss / d output."""
    inputs, pre = cache
    grads: list[torch.Tensor] = []
    for k in range(len(weights) - 1, -1, -1):
        h = inputs[k]  # (M, B, i + 1)
        grads.append(torch.bmm(h.transpose(1, 2), g))
        if k == 0:
            break
        w = weights[k][:, :-1]  # W_k without its bias row: (M, i, o)
        gh = g * w.transpose(1, 2) if w.shape[2] == 1 else torch.bmm(g, w.transpose(1, 2))
        g = activation_backward(gh, activation, h[..., :-1], pre[k - 1] if pre else None)
    return grads[::-1]


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
    diff, grad = _errors_and_grad(pred, target, kind, None, count, valid, huber_delta)
    return step_losses(diff, kind, count=count, huber_delta=huber_delta), grad


def loss_grad(pred: torch.Tensor, target: torch.Tensor, kind: str, *, out: torch.Tensor,
              count: torch.Tensor | None = None, valid: torch.Tensor | None = None,
              huber_delta: float = 1.0) -> torch.Tensor:
    """d loss_m / d pred (M, B, out) as :func:`loss_and_grad` computes it, without the loss:
    the errors ``pred - target`` (zero on padded rows) are written to ``out``, from which
    :func:`step_losses` gives the losses later (a training loop needs them once an epoch)."""
    return _errors_and_grad(pred, target, kind, out, count, valid, huber_delta)[1]


def _errors_and_grad(pred: torch.Tensor, target: torch.Tensor, kind: str,
                     out: torch.Tensor | None, count: torch.Tensor | None,
                     valid: torch.Tensor | None, huber_delta: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred - target`` zeroed on padded rows ``, d loss / d pred)``; the errors go to ``out``
    when given (no autograd through it then)."""
    diff = pred - target if out is None else torch.sub(pred, target, out=out)
    if valid is not None:
        diff = diff.masked_fill(~valid.unsqueeze(2), 0.0) if out is None else \
            diff.masked_fill_(~valid.unsqueeze(2), 0.0)
    return diff, _grad_of_errors(diff, kind, count, huber_delta)


def _grad_of_errors(diff: torch.Tensor, kind: str, count: torch.Tensor | None,
                    huber_delta: float) -> torch.Tensor:
    if kind == "sse":
        return 2.0 * diff
    m, b, o = diff.shape
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
                huber_delta: float = 1.0) -> torch.Tensor:
    """The losses of :func:`loss_and_grad` from stored errors ``diff`` (K, B, out), (K,)."""
    if kind == "sse":
        return diff.square().sum((1, 2))
    k, b, o = diff.shape
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
