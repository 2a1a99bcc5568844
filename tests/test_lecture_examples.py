"""The lecture's tensor examples (examples/lecture/0[1-4]_*.py) give what the slides show."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lecture"
SCRIPTS = ["01_tensors.py", "02_operations.py", "03_broadcasting.py", "04_autograd.py"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lecture_{name[:2]}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tensors() -> dict:
    return _load("01_tensors.py").main(verbose=False)


@pytest.fixture(scope="module")
def ops() -> dict:
    return _load("02_operations.py").main(verbose=False)


@pytest.fixture(scope="module")
def bcast() -> dict:
    return _load("03_broadcasting.py").main(verbose=False)


@pytest.fixture(scope="module")
def autograd() -> dict:
    return _load("04_autograd.py").main(verbose=False)


def test_scripts_run_as_programs_and_print():
    code = (
        "import runpy, sys\n"
        "for p in sys.argv[1:]:\n"
        "    runpy.run_path(p, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *(str(EXAMPLES / s) for s in SCRIPTS)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "torch.float32, cpu, torch.strided" in out
    assert "tensor([[ 23.,  32.]," in out
    assert "RuntimeError" in out and "TypeError" in out
    assert "CosBackward0" in out and "AddBackward0" in out
    assert "dy/dw= (tensor(-0.5000" in out


# ----------------------------------------------------------------- 01 tensors


def test_creation_from_list_and_numpy(tensors):
    expected = [[0.0, 1.0], [2.0, 3.0]]
    assert tensors["tensor_data_0"].tolist() == expected
    assert tensors["dtype_from_list"] == torch.float32
    assert tensors["dtype_from_numpy"] == torch.float64  # NumPy's default float
    assert tensors["tensor_data_1"].tolist() == expected
    # torch.tensor copies, torch.from_numpy shares memory with the array
    assert tensors["copied_after_write"] == 0.0
    assert tensors["shared_after_write"] == 10.0


def test_creation_from_shapes(tensors):
    assert tensors["ones_tensor"].shape == (3, 2) and bool((tensors["ones_tensor"] == 1).all())
    r = tensors["rand_tensor"]
    assert r.shape == (3, 2) and bool(((r >= 0) & (r < 1)).all())
    assert tensors["x_ones"].shape == (2, 2) and tensors["x_ones"].dtype == torch.float32
    assert tensors["x_rand"].shape == (2, 2)


def test_attributes(tensors):
    assert tensors["x1"].shape == (2, 3) == tensors["x1"].size()
    assert tensors["x1_attributes"] == (torch.float32, torch.device("cpu"), torch.strided)


# -------------------------------------------------------------- 02 operations


def test_single_tensor_operations(ops):
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert ops["transpose"].tolist() == x.T.tolist()
    assert ops["sum"].item() == 21.0
    assert ops["sum_dim0"].tolist() == [5.0, 7.0, 9.0]
    assert ops["mean_dim1_keepdim"].tolist() == [[2.0], [5.0]]
    assert ops["std"].item() == pytest.approx(np.std(np.arange(1, 7), ddof=1), rel=1e-6)
    assert ops["reshape"].shape == (3, 2)
    assert ops["squeeze"].shape == (2,)
    assert ops["unsqueeze"].shape == (1, 2, 3)


def test_transpose_shares_data(ops):
    assert ops["x1_a_shape"] == (1, 3, 2)
    assert ops["shares_storage"]
    assert ops["x1"].data_ptr() == ops["x1_a"].data_ptr()
    # the write x1_a[0, 0, 1] = 1 lands in x1[0, 1, 0]
    assert ops["write_through"] == 1.0
    assert torch.equal(ops["x1"].transpose(1, 2), ops["x1_a"])


def test_elementwise(ops):
    x = np.array([[1.0, 1.0], [2.0, 3.0]])
    y = np.array([[0.1, 0.1], [0.2, 0.3]])
    for key, ref in (("z_add", x + y), ("z_sub", x - y), ("z_mul", x * y), ("z_div", x / y)):
        np.testing.assert_allclose(ops[key].numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(ops["z_div"].numpy(), [[10.0, 10.0], [10.0, 10.0]], rtol=1e-6)
    assert ops["same_as_methods"]


def test_matmul_cases(ops):
    assert ops["Z_matmul"].tolist() == [[23.0, 32.0], [86.0, 122.0]]  # the slide's result
    assert torch.equal(ops["Z"], ops["Z_matmul"])
    assert ops["z_1"].tolist() == [23.0, 86.0]  # X @ y: 0*6+1*7+2*8, 3*6+4*7+5*8
    assert ops["z_2"].tolist() == [23.0, 86.0]  # y @ X^T is the same vector
    assert ops["y_dotprod"].item() == 36.0 + 49.0 + 64.0


# ------------------------------------------------------------ 03 broadcasting


def test_broadcasting_example_1(bcast):
    z = bcast["example1_z"]
    assert z.shape == (2, 2)
    np.testing.assert_allclose(z.numpy(), [[4.0, 5.0], [0.4, 0.5]], rtol=1e-6)
    assert bcast["times_number"].shape == (2, 1)
    assert torch.equal(bcast["times_number"], bcast["times_scalar_tensor"])
    np.testing.assert_allclose(bcast["times_number"].numpy(), [[2.0], [0.2]], rtol=1e-6)


def test_broadcasting_example_2(bcast):
    z, y = bcast["example2_z"], bcast["example2_y"]
    assert y.shape == (3, 2, 2)
    assert z.shape == (3, 2, 2)
    torch.testing.assert_close(z, y)  # x is the identity, broadcast over the batch


def test_broadcasting_errors_the_slides_mark(bcast):
    errors = bcast["errors"]
    assert isinstance(errors["x @ torch.tensor(2.0)"], RuntimeError)
    assert "1D" in str(errors["x @ torch.tensor(2.0)"])
    assert isinstance(errors["x @ 2.0"], TypeError)
    # and they really are what torch raises
    x = torch.eye(2)
    with pytest.raises(RuntimeError):
        _ = x @ torch.tensor(2.0)
    with pytest.raises(TypeError):
        _ = x @ 2.0


# ---------------------------------------------------------------- 04 autograd


def test_backward_matches_closed_form(autograd):
    bw = autograd["backward"]
    x, w, b = 2.0, 1.0, 3.0
    assert bw["w_grad"].item() == pytest.approx(-x * math.sin(w * x + b), rel=1e-6)
    assert bw["b_grad"].item() == pytest.approx(-math.sin(w * x + b), rel=1e-6)
    assert bw["y"].item() == pytest.approx(math.cos(5.0), rel=1e-6)


def test_step_by_step_walk_matches_slides(autograd):
    assert autograd["node_names"] == ["CosBackward0", "AddBackward0", "MulBackward0"]
    assert autograd["dy_dz"].item() == pytest.approx(-1.0)
    assert autograd["dy_dwx"].item() == pytest.approx(-1.0)
    assert autograd["dy_db"].item() == pytest.approx(-1.0)
    dw, dx = autograd["dy_dw"]
    assert dw.item() == pytest.approx(-0.5) and dx is None
    assert autograd["x_grad"] is None
    assert autograd["z"].item() == pytest.approx(math.pi / 2, rel=1e-6)
    # the walk against closed forms and against autograd itself
    x, w, b = autograd["x"], autograd["w"], autograd["b"]
    s = math.sin(w.item() * x.item() + b.item())
    assert dw.item() == pytest.approx(-x.item() * s, rel=1e-6)
    gw, gb = torch.autograd.grad(torch.cos(w * x + b), [w, b])
    assert gw.item() == pytest.approx(dw.item()) and gb.item() == pytest.approx(-s)
