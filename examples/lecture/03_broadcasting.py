"""Broadcasting: the slides' examples 1 and 2, including the two calls that fail.

Run it: ``python examples/lecture/03_broadcasting.py``; ``main()`` returns the key values.
"""

from __future__ import annotations

from typing import Any

import torch


def main(verbose: bool = True) -> dict[str, Any]:
    """Run both broadcasting examples; the two failing calls are caught and printed.

    >>> out = main(verbose=False)
    >>> tuple(out["example1_z"].shape), tuple(out["example2_z"].shape)
    ((2, 2), (3, 2, 2))
    """
    show = print if verbose else (lambda *a, **k: None)
    torch.manual_seed(0)

    # Example 1: (2, 1) * (1, 2) -> (2, 2); a Python number or a 0-d tensor broadcasts too
    x = torch.tensor([[1.0], [0.1]])
    y = torch.tensor([[4.0, 5.0]])
    z = x * y
    show("example 1: z = x * y, shape", tuple(z.shape), "\n", z)
    times_number = x * 2.0
    times_scalar_tensor = x * torch.tensor(2.0)
    show(times_number)
    show(times_scalar_tensor)

    # Example 2: (2, 2) @ (3, 2, 2) -> batched matmul, x broadcast over the batch
    x2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y2 = torch.randn([3, 2, 2])  # the slides write [3.0, 2.0, 2.0]; sizes must be integers
    z2 = x2 @ y2
    show("y:\n", y2)
    show("example 2: z = x @ y, shape", tuple(z2.shape), "\n", z2)

    errors: dict[str, BaseException] = {}
    for label, call in (
        ("x @ torch.tensor(2.0)", lambda: x2 @ torch.tensor(2.0)),
        ("x @ 2.0", lambda: x2 @ 2.0),
    ):
        try:
            call()
        except (RuntimeError, TypeError) as exc:  # the slides: "report errors"
            errors[label] = exc
            show(f"{label} -> {type(exc).__name__}: {exc}")

    return {
        "example1_x": x,
        "example1_y": y,
        "example1_z": z,
        "times_number": times_number,
        "times_scalar_tensor": times_scalar_tensor,
        "example2_y": y2,
        "example2_z": z2,
        "errors": errors,
    }


if __name__ == "__main__":
    main()
