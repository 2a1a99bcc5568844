"""Fully connected networks, built two ways as in the lecture.

* :class:`MLPLow` - the lecture's ``ANN_low``: raw ``nn.Parameter`` weights ``w1, b1, ...``
  shaped (in, out), applied as ``torch.matmul(z, w) + b`` (fused: ``torch.addmm``) and an
  activation function.
* :class:`MLP` - the lecture's ``ANN_high``: ``nn.Linear`` layers in ``nn.Sequential``.

Both take any list of hidden widths; with copied weights they compute the same function.

>>> net = MLP(1, 1, [6, 6], "sigmoid")
>>> net(torch.zeros(4, 1)).shape
torch.Size([4, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "elu": F.elu,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "silu": F.silu,
}
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU,
    "softplus": nn.Softplus, "gelu": nn.GELU, "silu": nn.SiLU,
}
_GAIN_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}


def init_layer(weight: torch.Tensor, bias: torch.Tensor, scheme: str, activation: str) -> None:
    """Initialise one layer in place. ``weight`` is viewed as (out, in), like ``nn.Linear``.

    ``lecture``: ``torch.rand`` weights in [0, 1) and zero biases (the slides' ``ANN_low``);
    ``default``: PyTorch's ``nn.Linear`` scheme; ``xavier``/``kaiming``: Glorot/He, zero biases;
    ``sklearn``: scikit-learn's ``MLPRegressor``/``MLPClassifier`` scheme, weights and biases
    uniform in +-sqrt(f / (fan_in + fan_out)) with f = 2 for sigmoid units and 6 otherwise.

    >>> w, b = torch.empty(300, 200), torch.empty(300)
    >>> init_layer(w, b, "sklearn", "sigmoid")
    >>> bool(w.abs().max() <= math.sqrt(2 / 500)) and bool(b.abs().max() <= math.sqrt(2 / 500))
    True
    """
    with torch.no_grad():
        if scheme == "lecture":
            weight.copy_(torch.rand(weight.shape[1], weight.shape[0], dtype=weight.dtype).T)
            bias.zero_()
        elif scheme == "default":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0
            nn.init.uniform_(bias, -bound, bound)
        elif scheme.startswith("xavier"):
            gain = nn.init.calculate_gain(_GAIN_NAMES.get(activation, "linear"))
            fn = nn.init.xavier_normal_ if scheme.endswith("normal") else nn.init.xavier_uniform_
            fn(weight, gain=gain)
            bias.zero_()
        elif scheme == "sklearn":
            fan_out, fan_in = weight.shape
            bound = math.sqrt((2.0 if activation == "sigmoid" else 6.0) / (fan_in + fan_out))
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        elif scheme.startswith("kaiming"):
            nonlin = "relu" if activation != "tanh" else "tanh"
            fn = nn.init.kaiming_normal_ if scheme.endswith("normal") else nn.init.kaiming_uniform_
            fn(weight, nonlinearity=nonlin)
            bias.zero_()
        else:  # validated by the config; a direct caller gets a clear message
            raise ValueError(f"unknown init scheme {scheme!r}")


class MLPLow(nn.Module):
    """The lecture's low-level network: ``z = act(z @ w_k + b_k)``; the last layer is linear.

    Parameters are registered as ``w1, b1, w2, b2, ...`` so ``model.parameters()`` works.
    """

    def __init__(self, in_dim: int, out_dim: int, neurons: Sequence[int] = (6, 6),
                 activation: str = "sigmoid", init: str = "lecture") -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.neurons = in_dim, out_dim, list(neurons)
        self.activation = activation
        self.act_fn = ACTIVATION_FUNCTIONS[activation]
        widths = [in_dim, *self.neurons, out_dim]
        self.n_layers = len(widths) - 1
        for k in range(self.n_layers):
            # (in, out) as on the slides, stored in nn.Linear's (out, in) memory layout so that
            # both builds run the same kernels and give bit-identical results
            w = nn.Parameter(torch.empty(widths[k + 1], widths[k]).T)
            b = nn.Parameter(torch.zeros(widths[k + 1]))
            init_layer(w.data.T, b.data, init, activation)
            self.register_parameter(f"w{k + 1}", w)
            self.register_parameter(f"b{k + 1}", b)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(w1, b1), (w2, b2), ...]`` with weights shaped (in, out)."""
        return [(getattr(self, f"w{k}"), getattr(self, f"b{k}")) for k in range(1, self.n_layers + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, in) -> (N, out)
        z = x
        for k, (w, b) in enumerate(self.layers()):
            # torch.matmul(z, w) + b, fused into one call as nn.Linear does (bit-identical to it)
            z = torch.addmm(b, z, w) if z.dim() == 2 else torch.matmul(z, w) + b
            if k < self.n_layers - 1:
                z = self.act_fn(z)
        return z


class MLP(nn.Module):
    """The lecture's high-level network: ``nn.Linear`` layers and activations in ``nn.Sequential``.

    Layers are reachable as ``layer1, layer2, ...`` (as on the slides) and as ``forwardpass``.
    """

    def __init__(self, in_dim: int, out_dim: int, neurons: Sequence[int] = (6, 6),
                 activation: str = "sigmoid", init: str = "default") -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.neurons = in_dim, out_dim, list(neurons)
        self.activation = activation
        widths = [in_dim, *self.neurons, out_dim]
        modules: list[nn.Module] = []
        for k in range(len(widths) - 1):
            layer = nn.Linear(widths[k], widths[k + 1])
            init_layer(layer.weight.data, layer.bias.data, init, activation)
            modules.append(layer)
            if k < len(widths) - 2:
                modules.append(ACTIVATION_MODULES[activation]())
        self.forwardpass = nn.Sequential(*modules)

    def __getattr__(self, name: str):  # layer1, layer2, ... as on the slides
        if name.startswith("layer") and name[5:].isdigit():
            linears = [m for m in self.forwardpass if isinstance(m, nn.Linear)]
            k = int(name[5:])
            if 1 <= k <= len(linears):
                return linears[k - 1]
        return super().__getattr__(name)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(W1^T, b1), ...]``: weights as (in, out) views, comparable with :class:`MLPLow`."""
        return [(m.weight.T, m.bias) for m in self.forwardpass if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, in) -> (N, out)
        return self.forwardpass(x)
