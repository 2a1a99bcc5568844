"""Greeks of a trained price surrogate by autograd, in the data's units and in float64.

A run's network maps *scaled* inputs to *scaled* outputs: ``x_s = (x - x_mean) / x_std`` and
``V = V_s * y_std + y_mean``. :func:`surrogate_greeks` differentiates the whole composition
``x -> x_s -> net -> V`` with :func:`torch.autograd.grad` on a float64 copy of the network, so
the chain rule ``dV/dx = y_std * dV_s/dx_s / x_std`` is applied by autograd itself and the result
is the derivative of exactly what :meth:`nnfin.runs.Run.predict` returns.

For the ``black-scholes`` kind (prices ``V/K`` with ``K = 1``) the Greeks are

* ``delta = dV/d moneyness``, ``gamma = d^2V/d moneyness^2`` (second autograd derivative),
* ``vega = dV/d sigma``, ``theta = -dV/d tau``, ``rho = dV/d r``.

A ReLU network is piecewise linear, so its exact second derivative is 0 almost everywhere;
``gamma_fd`` (a central difference of the network's autograd delta, step ``h``) shows the
curvature such a network does represent.

>>> run = nnfin.fit({"data": {"kind": "black-scholes", "n": 300}, "train": {"epochs": 1}},
...                 write=False)  # doctest: +SKIP
>>> surrogate_greeks(run, run_inputs)["delta"].shape  # doctest: +SKIP
(300,)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# greek -> (input feature, order of the derivative, sign)
GREEK_FEATURES: dict[str, tuple[str, int, float]] = {
    "delta": ("moneyness", 1, 1.0),
    "gamma": ("moneyness", 2, 1.0),
    "vega": ("sigma", 1, 1.0),
    "theta": ("tau", 1, -1.0),
    "rho": ("r", 1, 1.0),
}
PIECEWISE_LINEAR = ("relu",)


def float64_network(run: Any) -> torch.nn.Module:
    """A float64 copy of ``run.model`` on the CPU, in eval mode (the run's model is untouched)."""
    net = copy.deepcopy(run.model).to(device="cpu", dtype=torch.float64)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def price_function(run: Any, net: torch.nn.Module | None = None):
    """``f(x) -> V`` in data units (float64 tensors, differentiable): scaling, net, unscaling."""
    net = float64_network(run) if net is None else net
    scaler = run.scaler

    def f(x: torch.Tensor) -> torch.Tensor:
        xs = scaler.transform_x(x) if scaler is not None else x
        out = net(xs)
        return (scaler.inverse_y(out) if scaler is not None else out)[:, 0]

    return f


def available_greeks(features: Sequence[str]) -> list[str]:
    """The Greeks whose input feature the run has, in :data:`GREEK_FEATURES` order.

    >>> available_greeks(["moneyness", "tau", "r", "sigma"])
    ['delta', 'gamma', 'vega', 'theta', 'rho']
    >>> available_greeks(["moneyness", "tau"])
    ['delta', 'gamma', 'theta']
    """
    return [g for g, (feat, _, _) in GREEK_FEATURES.items() if feat in features]


def surrogate_greeks(run: Any, x: np.ndarray | torch.Tensor, greeks: Sequence[str] | None = None,
                     *, chunk: int = 65536, gamma_fd_step: float | None = None) -> dict[str, np.ndarray]:
    """Greeks of the surrogate at inputs ``x`` (n, n_features) in data units, as float64 arrays.

    ``greeks`` defaults to every Greek whose feature the run has. ``gamma_fd_step = h`` adds
    ``gamma_fd = (delta(m + h) - delta(m - h)) / 2h`` from the autograd delta.

    >>> g = surrogate_greeks(run, [[1.0, 0.5, 0.05, 0.2]])  # doctest: +SKIP
    >>> sorted(g)  # doctest: +SKIP
    ['delta', 'gamma', 'rho', 'theta', 'vega']
    """
    features = list(run.features)
    greeks = available_greeks(features) if greeks is None else list(greeks)
    for g in greeks:
        if g not in GREEK_FEATURES:
            raise ValueError(f"unknown Greek {g!r}; choose from {', '.join(GREEK_FEATURES)}")
        if GREEK_FEATURES[g][0] not in features:
            raise ValueError(f"Greek {g!r} needs the input {GREEK_FEATURES[g][0]!r} "
                             f"(features: {', '.join(features)})")
    f = price_function(run)
    x = (x.detach().to("cpu", torch.float64) if torch.is_tensor(x)
         else torch.tensor(np.asarray(x, dtype=np.float64)))
    out: dict[str, list[np.ndarray]] = {g: [] for g in greeks}
    if gamma_fd_step is not None:
        out["gamma_fd"] = []
    i_m = features.index("moneyness") if "moneyness" in features else None
    for start in range(0, x.shape[0], chunk):
        xc = x[start:start + chunk]
        for name, values in _greeks_chunk(f, xc, greeks, features).items():
            out[name].append(values)
        if gamma_fd_step is not None and i_m is not None:
            h = gamma_fd_step
            up, down = xc.clone(), xc.clone()
            up[:, i_m] += h
            down[:, i_m] -= h
            d_up = first_derivative(f, up)[:, i_m]
            d_down = first_derivative(f, down)[:, i_m]
            out["gamma_fd"].append(((d_up - d_down) / (2 * h)).numpy())
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}


def first_derivative(f, x: torch.Tensor) -> torch.Tensor:
    """``dV/dx`` (n, n_features) of ``f`` at ``x`` by one backward pass (V_i depends on x_i)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(x).sum(), x)
    return grad.detach()


def _greeks_chunk(f, x: torch.Tensor, greeks: Sequence[str], features: list[str]
                  ) -> dict[str, np.ndarray]:
    x = x.detach().clone().requires_grad_(True)
    out: dict[str, np.ndarray] = {}
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph="gamma" in greeks)
        for g in greeks:
            feat, order, sign = GREEK_FEATURES[g]
            i = features.index(feat)
            if order == 1:
                out[g] = (sign * grad[:, i]).detach().numpy()
            else:  # rows are independent, so d(sum_j dV_j/dm_j)/dm_i = d^2V_i/dm_i^2
                (second,) = torch.autograd.grad(grad[:, i].sum(), x, allow_unused=True)
                out[g] = np.zeros(x.shape[0]) if second is None else (sign * second[:, i]).detach().numpy()
    return out


def finite_difference_greeks(predict, x: np.ndarray, features: Sequence[str],
                             greeks: Sequence[str], *, h: float = 1e-4) -> dict[str, np.ndarray]:
    """Central differences of ``predict`` (e.g. :meth:`Run.predict`): an independent reference.

    ``h`` is an absolute step in the input's units; gamma uses
    ``(V(m+h) - 2V(m) + V(m-h)) / h^2`` (take ``h`` near ``1e-3`` for it in float64).

    >>> predict = lambda x: x[:, :1] ** 3
    >>> fd = finite_difference_greeks(predict, np.array([[2.0]]), ["moneyness"], ["delta", "gamma"])
    >>> np.allclose(fd["delta"], 12.0), np.allclose(fd["gamma"], 12.0, rtol=1e-4)
    (True, True)
    """
    x = np.asarray(x, dtype=np.float64)
    features = list(features)
    out: dict[str, np.ndarray] = {}
    base = np.asarray(predict(x))[:, 0]
    for g in greeks:
        feat, order, sign = GREEK_FEATURES[g]
        i = features.index(feat)
        up, down = x.copy(), x.copy()
        up[:, i] += h
        down[:, i] -= h
        v_up, v_down = np.asarray(predict(up))[:, 0], np.asarray(predict(down))[:, 0]
        if order == 1:
            out[g] = sign * (v_up - v_down) / (2 * h)
        else:
            out[g] = sign * (v_up - 2 * base + v_down) / h**2
    return out
