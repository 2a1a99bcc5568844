"""Operations on tensors: single-tensor ops, element-wise ops and matrix products.

Run it: ``python examples/lecture/02_operations.py``; ``main()`` returns the key values.
"""

from __future__ import annotations

from typing import Any

import torch


def main(verbose: bool = True) -> dict[str, Any]:
    """Run the slides' operation examples.

    >>> main(verbose=False)["Z"].tolist()
    [[23.0, 32.0], [86.0, 122.0]]
    """
    show = print if verbose else (lambda *a, **k: None)
    torch.manual_seed(0)

    # operations on a single tensor
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    single = {
        "transpose": torch.transpose(x, 0, 1),
        "sum": torch.sum(x),
        "sum_dim0": torch.sum(x, dim=0),
        "mean_dim1_keepdim": torch.mean(x, dim=1, keepdim=True),
        "std": torch.std(x),
        "reshape": torch.reshape(x, (3, 2)),
        "squeeze": torch.squeeze(torch.zeros(1, 2, 1)),
        "unsqueeze": torch.unsqueeze(torch.zeros(2, 3), 0),
    }
    for name, value in single.items():
        show(f"{name}: shape {tuple(value.shape)}\n", value)

    # swaps the 1st and 2nd dimensions; torch.transpose shares data
    x1 = torch.randn(1, 2, 3)
    x1_a = torch.transpose(x1, 1, 2)
    show("x1_a.shape:", x1_a.shape)
    x1_a[0, 0, 1] = 1.0
    show(x1_a)
    show(x1)  # x1[0, 1, 0] is now 1 as well

    # element-wise operations
    xe = torch.tensor([[1.0, 1.0], [2.0, 3.0]])
    ye = torch.tensor([[0.1, 0.1], [0.2, 0.3]])
    z_add, z_sub, z_mul, z_div = xe + ye, xe - ye, xe * ye, xe / ye
    same_as_methods = all(torch.equal(a, b) for a, b in (
        (z_add, torch.add(xe, ye)), (z_sub, torch.sub(xe, ye)),
        (z_mul, torch.mul(xe, ye)), (z_div, torch.div(xe, ye))))
    show("x + y:\n", z_add, "\nx - y:\n", z_sub, "\nx * y:\n", z_mul, "\nx / y:\n", z_div)

    # matrix products
    X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    Y = torch.tensor([[6.0, 9.0], [7.0, 10.0], [8.0, 11.0]])
    Z_matmul = torch.matmul(X, Y)
    Z = X @ Y  # same as .matmul
    show("matmul:\n", Z_matmul, "\n@:\n", Z)
    y = torch.tensor([6.0, 7.0, 8.0])
    z_1 = X @ y
    z_2 = y @ torch.transpose(X, 0, 1)
    show("X @ y:", z_1, "\ny @ X^T:", z_2)
    y_dotprod = y @ y
    show("y @ y:", y_dotprod)

    return {
        **single,
        "x1": x1,
        "x1_a": x1_a,
        "x1_a_shape": tuple(x1_a.shape),
        "shares_storage": x1_a.untyped_storage().data_ptr() == x1.untyped_storage().data_ptr(),
        "write_through": x1[0, 1, 0].item(),
        "z_add": z_add,
        "z_sub": z_sub,
        "z_mul": z_mul,
        "z_div": z_div,
        "same_as_methods": same_as_methods,
        "Z_matmul": Z_matmul,
        "Z": Z,
        "z_1": z_1,
        "z_2": z_2,
        "y_dotprod": y_dotprod,
    }


if __name__ == "__main__":
    main()
