"""Explain one prediction of a trained network: its backward graph and parameter gradients.

The prediction is taken in the data's units, ``y = inverse_y(model(transform_x(x)))``,
so the walk goes through the output scaling, the network and the input scaling. The raw
inputs are a leaf too, so the leaf table also shows ``dy/dinputs`` (the sensitivity of
the prediction to each feature).

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(1, 3), nn.Sigmoid(), nn.Linear(3, 1))
>>> ex = explain_model(net, ["x"], None, {"x": 0.5})
>>> ex.trace.agree, sorted(ex.trace.leaf_grads)[:3]
(True, ['0.bias', '0.weight', '2.bias'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nnfin.errors import ConfigError, one_of
from nnfin.explain.core import Explanation, ForwardValue
from nnfin.explain.expr import parse_value
from nnfin.explain.trace import trace

__all__ = ["explain_model", "explain_run"]


def _feature_values(
    features: Sequence[str], scaler: Any, values: Mapping[str, Any], dtype: torch.dtype
) -> tuple[torch.Tensor, list[str]]:
    unknown = [k for k in values if k not in features]
    if unknown:
        raise ConfigError(f"--set {unknown[0]!r}: not a feature of this model; "
                          f"{one_of(unknown[0], features)}")
    row, defaulted = [], []
    mean = getattr(scaler, "x_mean", None) if scaler is not None else None
    for i, name in enumerate(features):
        if name in values:
            raw = values[name]
            t = parse_value(raw, f"--set {name}") if isinstance(raw, str) else torch.tensor(raw)
            if t.numel() != 1:
                raise ConfigError(f"--set {name}={raw!r}: a feature value must be one number")
            row.append(float(t))
        else:
            row.append(float(mean[i]) if mean is not None else 0.0)
            defaulted.append(name)
    return torch.tensor([row], dtype=dtype), defaulted


def explain_model(
    model: nn.Module,
    features: Sequence[str],
    scaler: Any,
    values: Mapping[str, Any] | None = None,
    *,
    target: int = 0,
    target_name: str = "y",
) -> Explanation:
    """Walk the backward graph of one prediction ``model(x)[0, target]`` in the data's units.

    ``values`` gives raw feature values by name; a feature left out takes the training
    mean (the scaled origin) when ``scaler`` has ``x_mean``, else 0. ``scaler`` may be
    None or have ``transform_x``/``inverse_y``. Module outputs are named after the modules
    (``layer1``, ``forwardpass.0``) and parameters after ``named_parameters()``; the
    model's ``.grad`` fields and training mode are left as they were.
    """
    params = list(model.parameters())
    if not params:
        raise ConfigError("the model has no parameters to explain")
    dtype = params[0].dtype if params[0].is_floating_point() else torch.get_default_dtype()
    device = params[0].device
    x, defaulted = _feature_values(features, scaler, dict(values or {}), torch.float64)
    x = x.to(device).requires_grad_(True)
    recorded: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(_module: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                recorded.setdefault(name, out)
        return fn

    handles = [m.register_forward_hook(hook(f"{n}:{type(m).__name__}"))
               for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        xs = scaler.transform_x(x) if scaler is not None else x
        out = model(xs.to(dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if out.dim() == 1:
        out = out.reshape(1, -1)
    if not 0 <= target < out.shape[-1]:
        raise ConfigError(f"--target {target}: the model has {out.shape[-1]} output(s)")
    scaled = out[:, target : target + 1]
    y_full = scaler.inverse_y(out.to(torch.float64)) if scaler is not None else out
    y = y_full[0, target]
    names: dict[str, torch.Tensor] = {"inputs": x}
    names.update({n: p for n, p in model.named_parameters()})
    if scaler is not None:
        names["scaled inputs"] = xs
    names.update(recorded)
    if scaler is not None and out is not y_full:
        names["network output (scaled)"] = out
    tr = trace(y, names=names, output=target_name)
    forward = [ForwardValue(f, "input (data units)", x[0, i].detach())
               for i, f in enumerate(features)]
    if scaler is not None:
        forward.append(ForwardValue("scaled inputs", "transform_x(inputs)", xs.detach()))
    forward.append(ForwardValue("network output", "model(scaled inputs)", scaled.detach()))
    forward.append(ForwardValue(target_name, "prediction (data units)", y.detach()))
    n_params = sum(p.numel() for p in params)
    notes = [f"{type(model).__name__} with {n_params} parameters in {len(params)} tensors; "
             f"the backward graph has {len(tr.steps)} nodes"]
    if defaulted:
        fill = "training mean" if scaler is not None and hasattr(scaler, "x_mean") else "0"
        notes.append(f"feature(s) {', '.join(defaulted)} not given with --set: using the {fill}")
    return Explanation(f"{target_name} = model({', '.join(features)}), one prediction",
                       forward, tr, notes)


def explain_run(
    path: str | os.PathLike[str],
    values: Mapping[str, Any] | None = None,
    *,
    target: str | None = None,
) -> Explanation:
    """Load a run folder with :func:`nnfin.runs.load_run` and explain one prediction.

    >>> ex = explain_run("runs/my-run", {"x": 1.0})  # doctest: +SKIP
    """
    from nnfin.runs import load_run

    run = load_run(path)
    targets = list(getattr(run, "targets", None) or ["y"])
    index = 0
    if target is not None:
        if target not in targets:
            raise ConfigError(f"--target {target!r}: {one_of(target, targets)}")
        index = targets.index(target)
    name = targets[index] if targets[index].isidentifier() else "y"
    return explain_model(run.model, list(run.features), run.scaler, values,
                         target=index, target_name=name)
