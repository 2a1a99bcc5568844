import math

import numpy as np
import pandas as pd
import pytest
import torch

from nnfin.config import DataConfig, load_config
from nnfin.data import build_data
from nnfin.errors import ConfigError, DataError


@pytest.mark.parametrize(("kind", "fn"), [("cos", np.cos), ("sin", np.sin), ("exp", np.exp)])
def test_builtin_targets(kind, fn):
    data = build_data(DataConfig(kind=kind, n=500, scale=False))
    x, y = data.split("train", scaled=False)
    np.testing.assert_allclose(y.numpy(), fn(x.double().numpy()), rtol=1e-6, atol=1e-6)


def test_cos_default_range_and_grid():
    data = build_data(DataConfig(n=2000, sampling="grid", split=[1.0, 0.0, 0.0], scale=False),
                      dtype="float64")
    x = data.x_train[:, 0].numpy()
    np.testing.assert_array_equal(x, np.linspace(-0.5 * np.pi, 1.5 * np.pi, 2000))


def test_polynomial_target_and_noise_seeded():
    cfg = DataConfig(kind="polynomial", coefficients=[1.0, 0.0, 2.0], n=400, noise=0.1, seed=3)
    a, b = build_data(cfg), build_data(cfg)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    x, y = a.split("train", scaled=False)
    resid = y[:, 0].double() - (1 + 2 * x[:, 0].double() ** 2)
    assert 0.07 < float(resid.std()) < 0.13
    c = build_data(cfg.model_copy(update={"seed": 4}))
    assert not torch.equal(a.x_train, c.x_train)


def test_split_sizes_and_disjoint():
    data = build_data(DataConfig(n=1000, split=[0.6, 0.3, 0.1]))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (600, 300, 100)
    xs = torch.cat([data.x_train, data.x_val, data.x_test])[:, 0]
    assert len(torch.unique(xs)) == 1000


def test_scaling_uses_training_part_only_and_inverts():
    data = build_data(DataConfig(n=1000), dtype="float64")
    xs, ys = data.split("train")
    assert abs(float(xs.mean())) < 1e-12 and abs(float(xs.std()) - 1) < 1e-12
    assert abs(float(ys.mean())) < 1e-12
    x_raw = data.x_train
    np.testing.assert_allclose(data.scaler.x_mean.numpy(), x_raw.mean(0).numpy())
    # the validation part is scaled with the training statistics, not its own
    xv, _ = data.split("val")
    assert abs(float(xv.mean())) > 1e-6
    back = data.scaler.inverse_y(data.scaled["y_test"])
    torch.testing.assert_close(back, data.y_test)


def _write(tmp_path, frame, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("name", ["d.csv", "d.parquet"])
def test_file_data_several_inputs_and_outputs(tmp_path, name):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "note": "x"})
    frame["y1"] = frame.a + frame.b
    frame["y2"] = frame.a * frame.b
    path = _write(tmp_path, frame, name)
    data = build_data(DataConfig(kind="file", path=str(path), features=["a", "b"],
                                 target=["y1", "y2"]), dtype="float64")
    assert data.features == ["a", "b"] and data.targets == ["y1", "y2"]
    assert data.in_dim == 2 and data.out_dim == 2
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 50
    x, y = data.split("train", scaled=False)
    torch.testing.assert_close(y[:, 0], x[:, 0] + x[:, 1])


def test_file_default_columns(tmp_path):
    frame = pd.DataFrame({"u": np.arange(20.0), "v": np.arange(20.0) * 2, "w": np.arange(20.0)})
    path = _write(tmp_path, frame, "d.csv")
    data = build_data(DataConfig(kind="file", path=str(path)))
    assert data.features == ["u", "v"] and data.targets == ["w"]


@pytest.mark.parametrize(("content", "fragments"), [
    ("a,y\n1,2\n2,x\n", ["column 'y'", "not numeric", "row 1", "'x'"]),
    ("a,y\n1,2\n2,\n", ["column 'y'", "missing or non-finite", "row 1"]),
    ("a,y\n1,2\n2,inf\n", ["column 'y'", "non-finite"]),
    ("a,y\n", ["holds no rows"]),
    ("", ["cannot be read"]),
])
def test_bad_file_contents(tmp_path, content, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        build_data(DataConfig(kind="file", path=str(path), features=["a"], target="y"))
    for frag in fragments:
        assert frag in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_column_suggests(tmp_path):
    path = _write(tmp_path, pd.DataFrame({"price": [1.0, 2.0], "x": [0.0, 1.0]}), "d.csv")
    with pytest.raises(DataError, match=r"column 'prices' not found.*did you mean 'price'"):
        build_data(DataConfig(kind="file", path=str(path), features=["x"], target="prices"))


@pytest.mark.parametrize(("path", "fragment"), [
    ("nope.csv", "does not exist"), ("data.xlsx", "unsupported file type"),
])
def test_bad_paths(tmp_path, path, fragment):
    p = tmp_path / path
    if path.endswith("xlsx"):
        p.write_text("x")
    with pytest.raises(DataError, match=fragment):
        build_data(DataConfig(kind="file", path=str(p)))


def test_file_kind_needs_path():
    with pytest.raises(ConfigError, match="path"):
        build_data(DataConfig(kind="file"))


def test_unknown_kind():
    with pytest.raises(ConfigError, match=r"kind = 'coss'.*did you mean 'cos'"):
        load_config(None, ["data.kind=coss"])  # refused at load, before any data are built


def test_split_leaving_too_few_training_rows():
    with pytest.raises(DataError, match="training rows"):
        build_data(DataConfig(n=3, split=[0.34, 0.33, 0.33]))


def test_data_lives_on_requested_dtype():
    data = build_data(DataConfig(n=100), dtype="float64")
    assert data.scaled["x_train"].dtype == torch.float64
    assert math.isclose(float(data.scaled["x_train"].std()), 1.0, rel_tol=1e-9)
