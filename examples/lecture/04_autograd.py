"""The computational graph of y = cos(w x + b): forward, backward, and a walk by hand.

Run it: ``python examples/lecture/04_autograd.py``; ``main()`` returns the key values.
``nnfin explain`` shows the same walk as tables (and ``--out graph.png`` as a picture).
"""

from __future__ import annotations

from typing import Any

import torch


def main(verbose: bool = True) -> dict[str, Any]:
    """Run the forward/backward example and the step-by-step grad_fn walk.

    >>> out = main(verbose=False)
    >>> out["dy_dz"].item(), out["dy_dw"][0].item()
    (-1.0, -0.5)
    """
    show = print if verbose else (lambda *a, **k: None)

    # forward and backward pass, x = 2, w = 1, b = 3
    x = torch.tensor(2.0, requires_grad=False)
    w = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    wx = w * x
    z = wx + b
    y = torch.cos(z)
    y.backward()
    show("w.grad, b.grad:", w.grad, b.grad)
    backward = {"x": x, "w": w, "b": b, "y": y.detach(), "w_grad": w.grad, "b_grad": b.grad}

    # a step-by-step way of back propagation: x = 0.5, w = 1, b = pi/2 - 0.5
    x = torch.tensor(0.5, requires_grad=False)
    w = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(0.5 * torch.pi - 0.5, requires_grad=True)
    wx = w * x
    z = wx + b
    y = torch.cos(z)

    # fetch gradients backward using grad_fn
    grad_cos_back = y.grad_fn
    dy_dy = torch.tensor(1.0)
    dy_dz = grad_cos_back(dy_dy)
    show("grad_cos_back", grad_cos_back, "\n dy/dz=", dy_dz)

    # use next_functions of grad_fn to walk backward
    grad_add_back = y.grad_fn.next_functions[0][0]
    dy_dwx, dy_db = grad_add_back(dy_dz)
    show("grad_add_back ", grad_add_back)
    show("dy/dwx=", dy_dwx, "\n dy/db=", dy_db)

    grad_mul_back = y.grad_fn.next_functions[0][0].next_functions[0][0]
    dy_dw = grad_mul_back(dy_dwx)
    show("dy/dw=", dy_dw)

    # gradients associated with a tensor: .grad is a value, .grad_fn a function
    show(x.grad)  # None: x does not require grad
    show(y.grad_fn)
    names = [grad_cos_back.name(), grad_add_back.name(), grad_mul_back.name()]

    return {
        "backward": backward,
        "x": x,
        "w": w,
        "b": b,
        "z": z.detach(),
        "y": y.detach(),
        "node_names": names,
        "dy_dz": dy_dz,
        "dy_dwx": dy_dwx,
        "dy_db": dy_db,
        "dy_dw": dy_dw,
        "x_grad": x.grad,
    }


if __name__ == "__main__":
    main()
