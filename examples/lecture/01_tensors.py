"""The lecture's tensor basics: creation (list, NumPy, shapes) and attributes.

Run it: ``python examples/lecture/01_tensors.py``. ``main()`` prints what each slide
shows and returns the key values in a dict (used by the tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def main(verbose: bool = True) -> dict[str, Any]:
    """Run every tensor-creation and attribute example of the slides.

    >>> out = main(verbose=False)
    >>> out["ones_tensor"].shape
    torch.Size([3, 2])
    """
    show = print if verbose else (lambda *a, **k: None)
    torch.manual_seed(0)

    # from a list
    data = [[0.0, 1.0], [2.0, 3.0]]
    tensor_data_0 = torch.tensor(data)
    show("from a list:\n", tensor_data_0)

    # from a NumPy array: torch.tensor copies, torch.from_numpy shares memory
    np_array = np.array(data)
    tensor_data_1 = torch.tensor(np_array)
    tensor_data_2 = torch.from_numpy(np_array)
    show("from NumPy (copy):\n", tensor_data_1)
    show("from NumPy (shared):\n", tensor_data_2)
    np_array[0, 0] = 10.0  # visible through from_numpy only
    show("after np_array[0, 0] = 10: copy", tensor_data_1[0, 0].item(),
         "| shared", tensor_data_2[0, 0].item())
    shared_after_write = tensor_data_2[0, 0].item()
    copied_after_write = tensor_data_1[0, 0].item()
    np_array[0, 0] = 0.0

    # from a given size/shape (the slides' tensor_data is tensor_data_0)
    size = [3, 2]
    ones_tensor = torch.ones(size)
    rand_tensor = torch.rand(size)
    tensor_data = tensor_data_0
    x_ones = torch.ones_like(tensor_data)
    x_rand = torch.rand_like(tensor_data)
    show("ones:\n", ones_tensor, "\nrand:\n", rand_tensor)
    show("ones_like:\n", x_ones, "\nrand_like:\n", x_rand)

    # attributes
    x1 = torch.randn([2, 3], dtype=torch.float32, device=torch.device("cpu"))
    show(f"x1: \n {x1.dtype}, {x1.device}, {x1.layout}")
    show("x1.shape:", x1.shape, "x1.size():", x1.size(), "x1.stride():", x1.stride())

    return {
        "tensor_data_0": tensor_data_0,
        "tensor_data_1": tensor_data_1,
        "tensor_data_2": tensor_data_2,
        "dtype_from_list": tensor_data_0.dtype,
        "dtype_from_numpy": tensor_data_1.dtype,
        "shared_after_write": shared_after_write,
        "copied_after_write": copied_after_write,
        "ones_tensor": ones_tensor,
        "rand_tensor": rand_tensor,
        "x_ones": x_ones,
        "x_rand": x_rand,
        "x1": x1,
        "x1_attributes": (x1.dtype, x1.device, x1.layout),
    }


if __name__ == "__main__":
    main()
