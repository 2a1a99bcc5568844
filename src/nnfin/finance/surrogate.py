"""Greeks of a trained price surrogate by autograd, in the data's units and in float64.

:func:`greeks` (public, ``nnfin.finance.greeks``) returns a DataFrame of the first and second
derivatives with respect to every input and the named Greeks; :func:`surrogate_greeks` (the
report's) returns the named Greeks as arrays. Both go through :func:`input_derivatives`.

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
import pandas as pd
import torch

from nnfin.errors import ConfigError, DataError

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
    return input_derivatives(f, x)[0]


def input_derivatives(f, x: torch.Tensor, second: Sequence[int] = ()
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dV/dx, d2V/dx_j dx)`` of ``f`` at the rows ``x`` (n, d), by autograd.

    The first is (n, d); the second (n, len(second), d) holds, for each input index ``j`` in
    ``second``, the row ``d2V/dx_j dx_k`` of every sample's Hessian (one extra backward pass per
    ``j``). Rows are independent (``V_i`` depends on ``x_i`` only), so the gradient of a sum gives
    every row's derivatives at once.

    >>> f = lambda x: (x[:, 0] ** 2) * x[:, 1]
    >>> g, h = input_derivatives(f, torch.tensor([[3.0, 2.0]], dtype=torch.float64), second=[0, 1])
    >>> g.tolist(), h.tolist()
    ([[12.0, 9.0]], [[[4.0, 6.0], [6.0, 0.0]]])
    """
    x = x.detach().clone().requires_grad_(True)
    rows = []
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph=bool(second))
        for j in second:
            if not grad.requires_grad:  # a network linear in its inputs: no curvature at all
                rows.append(torch.zeros_like(x))
                continue
            (row,) = torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(x) if row is None else row)
    hess = torch.stack(rows, dim=1) if rows else x.new_zeros((x.shape[0], 0, x.shape[1]))
    return grad.detach(), hess.detach()


def _greeks_chunk(f, x: torch.Tensor, greeks: Sequence[str], features: list[str]
                  ) -> dict[str, np.ndarray]:
    second = sorted({features.index(GREEK_FEATURES[g][0]) for g in greeks
                     if GREEK_FEATURES[g][1] == 2})
    grad, hess = input_derivatives(f, x, second)
    out: dict[str, np.ndarray] = {}
    for g in greeks:
        feat, order, sign = GREEK_FEATURES[g]
        i = features.index(feat)
        values = grad[:, i] if order == 1 else hess[:, second.index(i), i]
        out[g] = (sign * values).numpy()
    return out


PRICE_KINDS = ("black-scholes", "heston")
PRICE_TARGETS = ("price",)


def check_price_surrogate(run: Any) -> None:
    """Refuse, in one line, a run that does not predict one option price.

    A price surrogate has one output, named ``price`` (nnfin's finance datasets) or trained on a
    price kind (``black-scholes``, ``heston``); an implied-volatility network is not one.
    """
    targets = list(getattr(run, "targets", []) or [])
    data = getattr(getattr(run, "config", None), "data", None)
    kind = getattr(data, "kind", None)
    where = f"run {str(run.dir)!r}" if getattr(run, "dir", None) is not None else "the run"
    if len(targets) != 1:
        raise ConfigError(f"{where} predicts {len(targets)} targets {targets!r}; Greeks need a "
                          f"price surrogate with one output (a price)")
    if targets[0] not in PRICE_TARGETS and kind not in PRICE_KINDS:
        raise ConfigError(f"{where} predicts {targets[0]!r} (kind {kind!r}), not an option price; "
                          f"Greeks need a price surrogate (kind black-scholes or heston, or a "
                          f"target column named 'price')")


def _check_numeric(column: pd.Series, name: str, index: Any) -> None:
    """Refuse, naming the row and the value, a column that is not real numbers: text that is not
    a number, true/false, complex values."""
    kind = column.dtype.kind
    if kind in "iuf":
        return
    if kind == "b":
        raise DataError(f"frame column {name!r} holds true/false values, not numbers "
                        f"(row {_label(index, 0)!r}: {_plain(column.iloc[0])!r})")
    if kind == "c":
        raise DataError(f"frame column {name!r} holds complex values, not real numbers "
                        f"(row {_label(index, 0)!r}: {_plain(column.iloc[0])!r})")
    for i, value in enumerate(column.tolist()):
        if isinstance(value, bool | complex):
            raise DataError(f"frame column {name!r} is not numeric: row {_label(index, i)!r} "
                            f"holds {value!r}")
        if value is None:
            continue  # missing: refused below as a non-finite value at its row
        try:
            float(value)
        except (TypeError, ValueError):
            raise DataError(f"frame column {name!r} is not numeric: row {_label(index, i)!r} "
                            f"holds {value!r}") from None


def _label(index: Any, i: int) -> Any:
    """The index label of the ``i``-th row, as a plain Python value."""
    return _plain(index[i])


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (``np.True_`` -> ``True``)."""
    return value.item() if isinstance(value, np.generic) else value


def _input_rows(run: Any, frame: Any) -> tuple[np.ndarray, Any]:
    """The run's feature columns of ``frame`` as float64 (n, d) and the frame's index."""
    features = list(run.features)
    if isinstance(frame, pd.DataFrame):
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise DataError(f"frame lacks the feature column {missing[0]!r} the run was trained on "
                            f"(features: {', '.join(features)}; frame has: "
                            f"{', '.join(map(str, frame.columns))})")
        twice = next((f for f in features if list(frame.columns).count(f) > 1), None)
        if twice is not None:
            raise DataError(f"frame has two columns named {twice!r}; give every column its own name")
        index = frame.index
        for name in features:
            _check_numeric(frame[name], name, index)
        x = frame[features].to_numpy(dtype=np.float64)
    else:
        raw = np.asarray(frame.detach().cpu() if torch.is_tensor(frame) else frame)
        if raw.dtype.kind in "bc":
            raise DataError(f"inputs hold {'true/false' if raw.dtype.kind == 'b' else 'complex'} "
                            "values, not real numbers; give a DataFrame with the columns "
                            f"{', '.join(features)}")
        try:
            x = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"inputs are not numeric; give a DataFrame with the columns "
                            f"{', '.join(features)}") from None
        if x.ndim != 2 or x.shape[1] != len(features):
            raise DataError(f"inputs have shape {x.shape}; expected (n, {len(features)}) for the "
                            f"features {', '.join(features)}")
        index = pd.RangeIndex(x.shape[0])
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        label = _label(index, row)
        raise DataError(f"frame has a non-finite value at row {label!r}, column "
                        f"{features[col]!r} ({x[row, col]}); Greeks need finite inputs")
    return x, index


def greeks(run: Any, frame: Any, *, cross: bool = False, chunk: int = 65536) -> pd.DataFrame:
    """The surrogate's first and second derivatives with respect to every input, in data units.

    ``run`` is a trained price surrogate (:func:`nnfin.fit`, :func:`nnfin.load_run`); ``frame``
    holds its input columns by name (``run.features``, as in ``model.json``; other columns are
    ignored), or is an (n, n_features) array in that order. Returns a DataFrame on the frame's
    index with, for a target ``price`` and every input ``x``:

    * ``d_price/d_x`` - the first derivative (autograd through the data scaling, float64);
    * ``d2_price/d_x2`` - the second derivative (a second autograd pass, no finite differences);
    * with ``cross=True`` also ``d2_price/d_x_d_y`` for every pair of inputs (e.g. vanna
      ``d2_price/d_moneyness_d_sigma``);
    * the named Greeks the inputs allow, prices in units of the strike: ``delta = dV/dm``,
      ``gamma = d2V/dm2`` (``m`` = moneyness), ``vega = dV/dsigma``, ``theta = -dV/dtau``,
      ``rho = dV/dr`` (the rate; a Heston input called ``rho``, the correlation, has only its
      ``d_price/d_rho`` column).

    >>> import nnfin, pandas as pd
    >>> run = nnfin.load_run("runs/bs")  # doctest: +SKIP
    >>> g = nnfin.finance.greeks(run, pd.DataFrame(  # doctest: +SKIP
    ...     {"moneyness": [1.0], "tau": [0.5], "r": [0.05], "sigma": [0.2]}))
    >>> g[["delta", "gamma", "vega", "theta", "rho"]]  # doctest: +SKIP
    """
    if not hasattr(run, "model") or not hasattr(run, "features"):
        raise ConfigError(f"run = {run!r}: greeks needs a trained run, e.g. "
                          "nnfin.load_run('runs/bs') or the result of nnfin.fit")
    check_price_surrogate(run)
    features, target = list(run.features), run.targets[0]
    x, index = _input_rows(run, frame)
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk = {chunk!r} must be a whole number >= 1")
    f = price_function(run)
    d = len(features)
    grads, hessians = [], []
    for start in range(0, x.shape[0], chunk):
        g, h = input_derivatives(f, torch.tensor(x[start:start + chunk]), range(d))
        grads.append(g.numpy())
        hessians.append(h.numpy())
    grad = np.concatenate(grads) if grads else np.empty((0, d))
    hess = np.concatenate(hessians) if hessians else np.empty((0, d, d))
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(features):
        cols[f"d_{target}/d_{name}"] = grad[:, i]
    for i, name in enumerate(features):
        cols[f"d2_{target}/d_{name}2"] = hess[:, i, i]
    if cross:
        for i in range(d):
            for j in range(i + 1, d):
                cols[f"d2_{target}/d_{features[i]}_d_{features[j]}"] = hess[:, i, j]
    for g_name in available_greeks(features):
        feat, order, sign = GREEK_FEATURES[g_name]
        i = features.index(feat)
        cols[g_name] = sign * (grad[:, i] if order == 1 else hess[:, i, i])
    return pd.DataFrame(cols, index=index)


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
