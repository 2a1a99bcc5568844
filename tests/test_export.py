"""nnfin export RUN -o FILE: ONNX (run by ONNX Runtime) and torch.export files that match
nnfin predict, the data scaling folded in; --check; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.data.scaling import Standardizer
from nnfin.errors import ExportError, FileFormatError, WriteError
from nnfin.models import MLP
from nnfin.runs import Run

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

QUICK = [*FAST, "run.plots=false"]
BATCHES = (1, 5, 1000)


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inputs(run_dir: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` float32-representable rows over the training range of each feature."""
    spec = json.loads((run_dir / "model.json").read_text())
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.uniform(-1.5, 1.5, n) for f in spec["features"]})
    if "S" in frame:
        frame["S"], frame["K"] = 100 + 20 * frame["S"], 100 + 10 * frame["K"]
    return frame.astype(np.float32).astype(np.float64)


def _onnx_outputs(path: Path, frame: pd.DataFrame, features: list[str], targets: list[str]):
    session = _session(path)
    outs = session.run(targets, {f: frame[f].to_numpy(np.float32) for f in features})
    return np.stack(outs, axis=1).astype(np.float64)


def _assert_matches(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, *,
                    pointwise: bool = False) -> None:
    """Within ``rtol`` of each value (``pointwise``), else of each value or, near zero, of the
    target's RMS (a float32 network resolves ~1e-7 of its output's scale, not of a value ~0)."""
    assert got.shape == expected.shape
    if pointwise:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=0)
        return
    floor = np.maximum(np.abs(expected), np.sqrt(np.mean(expected**2, axis=0)))
    worst = float(np.max(np.abs(got - expected) / floor))
    assert worst <= rtol, worst


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small fits (seconds): every model kind, a 2-target run, float64, no scaling."""
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"S": rng.uniform(80, 120, 300), "K": rng.uniform(90, 110, 300)})
    frame["V"] = np.maximum(frame["S"] - frame["K"], 0.0) + 0.1 * frame["S"]
    frame["delta"] = (frame["S"] > frame["K"]).astype(float)
    made = {}
    for name, extra, target in [
        ("mlp", ["model.kind='mlp'", "model.neurons=[8, 8]", "model.activation='tanh'"], "V"),
        ("mlp-low", ["model.kind='mlp-low'", "model.neurons=[8]", "model.activation='sigmoid'"], "V"),
        ("two-targets", ["model.neurons=[8]", "model.activation='relu'"], ["V", "delta"]),
        ("float64", ["model.neurons=[8]", "model.activation='elu'", "train.dtype='float64'"], "V"),
    ]:
        nnfin.fit(data=frame, features=["S", "K"], target=target, overrides=[*QUICK, *extra],
                  run_dir=folder / name)
        made[name] = folder / name
    nnfin.fit(overrides=[*QUICK, "model.kind='polynomial'", "data.kind='cos'"],
              run_dir=folder / "polynomial")
    nnfin.fit(overrides=[*QUICK, "data.scale=false", "model.neurons=[4]"], run_dir=folder / "unscaled")
    made["polynomial"], made["unscaled"] = folder / "polynomial", folder / "unscaled"
    return made


@pytest.mark.parametrize("kind", ["mlp", "mlp-low", "polynomial", "two-targets", "float64",
                                  "unscaled"])
def test_the_onnx_file_matches_nnfin_predict(runs, kind, tmp_path, cli):
    run_dir, out = runs[kind], tmp_path / f"{kind}.onnx"
    res = cli("export", str(run_dir), "-o", str(out))
    assert res.code == 0, res.err
    spec = json.loads((run_dir / "model.json").read_text())
    features, targets = spec["features"], spec["targets"]
    assert f"inputs:  {', '.join(features)} (float32, shape [batch]" in res.out
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == features  # model.json's order
    assert [o.name for o in session.get_outputs()] == targets
    assert all(i.type == "tensor(float)" and i.shape == ["batch"] for i in session.get_inputs())
    assert all(o.type == "tensor(float)" and o.shape == ["batch"] for o in session.get_outputs())
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["nnfin.features"]) == features
    assert json.loads(meta["nnfin.targets"]) == targets
    for n in BATCHES:
        frame = _inputs(run_dir, n, seed=n)
        expected = nnfin.predict(run_dir, frame)[[f"{t}_pred" for t in targets]].to_numpy()
        got = _onnx_outputs(out, frame, features, targets)
        assert got.shape == (n, len(targets))
        _assert_matches(got, expected)
        if kind == "float64":  # the network and the scaling in float64: only the output's rounding
            _assert_matches(got, expected, rtol=1.2e-7, pointwise=True)


def test_the_scaling_is_in_the_file(runs, tmp_path):
    """Prices in the data's units (V ~ 10-30), far from the network's standardized outputs."""
    out = tmp_path / "m.onnx"
    nnfin.export(runs["mlp"], out)
    frame = _inputs(runs["mlp"], 200)
    got = _onnx_outputs(out, frame, ["S", "K"], ["V"])[:, 0]
    run = nnfin.load_run(runs["mlp"])
    with torch.no_grad():
        raw = run.model(torch.tensor(frame[["S", "K"]].to_numpy(), dtype=torch.float32)).numpy()[:, 0]
    assert np.abs(got - raw).max() > 1.0
    np.testing.assert_allclose(got.mean(), run.predict(frame).mean(), rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["elu", "softplus", "gelu", "silu"])
def test_activations_in_float32_and_float64(activation, dtype, tmp_path):
    """ONNX Runtime has no float64 Elu, Softplus or Erf: those are rewritten in operations it
    runs; the file still computes the network in float64 (weights stored as doubles)."""
    torch.manual_seed(0)
    net = MLP(3, 2, [16, 16], activation).to(getattr(torch, dtype))
    scaler = Standardizer(torch.tensor([1.0, -2.0, 50.0], dtype=torch.float64),
                          torch.tensor([0.5, 3.0, 20.0], dtype=torch.float64),
                          torch.tensor([10.0, -1.0], dtype=torch.float64),
                          torch.tensor([2.0, 0.1], dtype=torch.float64))
    run = Run(nnfin.load_config({}), net, scaler, ["a", "b", "c"], ["p", "q"])
    done = nnfin.export(run, tmp_path / "f64.onnx", check=True)
    assert done.max_rel_error is not None and done.max_rel_error < 1e-5
    model = onnx.load(str(tmp_path / "f64.onnx"))
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    kind = onnx.TensorProto.DOUBLE if dtype == "float64" else onnx.TensorProto.FLOAT
    assert len(weights) == 3 and all(t.data_type == kind for t in weights)
    if dtype == "float32":
        return
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal([1.0, -2.0, 50.0], [1.0, 6.0, 40.0], size=(500, 3)),
                         columns=["a", "b", "c"]).astype(np.float32).astype(np.float64)
    got = _onnx_outputs(tmp_path / "f64.onnx", frame, ["a", "b", "c"], ["p", "q"])
    if activation == "gelu":  # erf in float32
        _assert_matches(got, run.predict(frame), rtol=1e-6)
    else:
        _assert_matches(got, run.predict(frame), rtol=1.2e-7, pointwise=True)


def test_the_torch_export_file_matches_nnfin_predict(runs, tmp_path, cli):
    out = tmp_path / "two.pt2"
    res = cli("export", str(runs["two-targets"]), "-o", str(out), "--check")
    assert res.code == 0, res.err
    assert "torch.export program" in res.out and "checked: torch" in res.out
    module = torch.export.load(str(out)).module()
    for n in BATCHES:
        frame = _inputs(runs["two-targets"], n, seed=n)
        with torch.no_grad():
            outs = module(*(torch.tensor(frame[f].to_numpy(), dtype=torch.float32) for f in ("S", "K")))
        got = np.stack([o.numpy() for o in outs], axis=1).astype(np.float64)
        expected = nnfin.predict(runs["two-targets"], frame)[["V_pred", "delta_pred"]].to_numpy()
        _assert_matches(got, expected)


def test_check_reports_the_error_and_the_api_returns_it(runs, tmp_path, cli):
    res = cli("export", str(runs["mlp-low"]), "-o", str(tmp_path / "a.onnx"), "--check")
    assert res.code == 0, res.err
    assert "checked: ONNX Runtime vs nnfin predict on 1024 sample rows" in res.out
    done = nnfin.export(runs["polynomial"], tmp_path / "p.onnx", check=True)
    assert done.format == "onnx" and done.inputs == ["x"] and done.outputs == ["y"]
    assert done.bytes == (tmp_path / "p.onnx").stat().st_size and done.opset
    assert 0 <= done.max_rel_error <= 1e-5 and done.rows_checked == 1024
    assert nnfin.export(runs["polynomial"], tmp_path / "q.onnx").max_rel_error is None


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_check_refuses_a_file_that_differs_and_leaves_nothing(runs, tmp_path, cli, monkeypatch,
                                                             suffix):
    from nnfin.app import export as export_module

    forward = export_module.DataUnits.forward

    def corrupted(self, *columns):  # 1e-4 relative: far below what a plot would show
        return tuple(y * (1 + 1e-4) for y in forward(self, *columns))

    monkeypatch.setattr(export_module.DataUnits, "forward", corrupted)
    out = tmp_path / f"m{suffix}"
    res = cli("export", str(runs["mlp"]), "-o", str(out), "--check")
    assert_one_line_error(res, "--check", "differs from nnfin predict", "limit 1e-05",
                          "nothing was written")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no temporary file either
    assert cli("export", str(runs["mlp"]), "-o", str(out)).code == 0  # unchecked: written
    monkeypatch.setattr(export_module.DataUnits, "forward", forward)
    out.write_bytes(b"old")
    res = cli("export", str(runs["mlp"]), "-o", str(out), "--check", "--force")
    assert res.code == 0, res.err


def test_an_existing_file_needs_force(runs, tmp_path, cli):
    out = tmp_path / "m.onnx"
    out.write_text("precious\n")
    assert_one_line_error(cli("export", str(runs["mlp"]), "-o", str(out)), "m.onnx",
                          "already exists", "--force")
    assert out.read_text() == "precious\n"
    with pytest.raises(WriteError, match="already exists"):
        nnfin.export(runs["mlp"], out)
    assert cli("export", str(runs["mlp"]), "-o", str(out), "--force").code == 0
    assert _session(out).get_inputs()[0].name == "S"


def test_bad_inputs_are_one_line(runs, tmp_path, cli):
    out = str(tmp_path / "m.onnx")
    assert_one_line_error(cli("export", str(tmp_path / "norun"), "-o", out), "norun",
                          "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("export", str(tmp_path / "empty"), "-o", out), "empty",
                          "neither a run folder nor a model folder")
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    assert_one_line_error(cli("export", str(tmp_path / "data.csv"), "-o", out), "data.csv",
                          "not a run folder or an nnfin model file")
    torch.save(MLP(1, 1, [4]).state_dict(), tmp_path / "sd.pt")
    assert_one_line_error(cli("export", str(tmp_path / "sd.pt"), "-o", out), "sd.pt",
                          "feature and target names")
    assert_one_line_error(cli("export", str(runs["mlp"]), "-o", str(tmp_path / "m.txt")),
                          "m.txt", "is not one of .onnx, .pt2")
    broken = Path(shutil.copytree(runs["mlp"], tmp_path / "broken"))
    (broken / "model.safetensors").unlink()
    assert_one_line_error(cli("export", str(broken), "-o", out), "model.safetensors",
                          "does not exist")
    (broken / "model.json").unlink()
    assert_one_line_error(cli("export", str(broken), "-o", out), "broken", "no saved model")
    assert not (tmp_path / "m.onnx").exists()


def test_model_folders_and_model_files_export_too(runs, tmp_path, cli):
    saved = nnfin.save(nnfin.load_run(runs["mlp"]), tmp_path / "saved")
    for source in (saved, saved / "model.json", saved / "model.safetensors"):
        out = tmp_path / f"{Path(source).name}.onnx"
        assert cli("export", str(source), "-o", str(out)).code == 0
        frame = _inputs(runs["mlp"], 50)
        _assert_matches(_onnx_outputs(out, frame, ["S", "K"], ["V"]),
                        nnfin.predict(runs["mlp"], frame)[["V_pred"]].to_numpy())


def test_a_missing_package_is_named_with_the_pip_command(runs, tmp_path, cli, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    assert_one_line_error(cli("export", str(runs["mlp"]), "-o", str(tmp_path / "m.onnx")),
                          "ONNX export needs onnxscript", "pip install 'nnfin[onnx]'")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    assert_one_line_error(cli("export", str(runs["mlp"]), "-o", str(tmp_path / "m.onnx"), "--check"),
                          "--check needs onnxruntime", "pip install 'nnfin[onnx]'")
    assert cli("export", str(runs["mlp"]), "-o", str(tmp_path / "m.pt2"), "--check").code == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt2"]


# ------------------------------------------------------------------ networks of one's own


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


class FixedRows(Branches):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).reshape(4, 1)


class LogGamma(Branches):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(2 + self.linear(x).abs())


def _own(net: nn.Module) -> Run:
    return Run(nnfin.load_config({}), net, None, ["a", "b"], ["y"])


@pytest.mark.parametrize("net, why", [
    (Branches(), "branches on tensor values"),
    (FixedRows(), "fixes the number of rows"),
    (LogGamma(), "prims.lgamma, which has no ONNX translation"),
])
def test_a_network_that_cannot_be_exported_says_why(net, why, tmp_path):
    with pytest.raises(ExportError, match="cannot be") as info:
        nnfin.export(_own(net), tmp_path / "own.onnx")
    assert why in str(info.value) and type(net).__name__ in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "own.onnx").exists()


def test_a_network_of_ones_own_exports_from_python(tmp_path, cli):
    x = np.random.default_rng(0).uniform(-1, 1, (200, 2))
    net = LogGamma()
    nnfin.fit(data=(x, x[:, :1] ** 2), model=net, features=["a", "b"], target="y",
              overrides=QUICK, run_dir=tmp_path / "own")
    assert_one_line_error(cli("export", str(tmp_path / "own"), "-o", str(tmp_path / "own.pt2")),
                          "network of your own", "nnfin.export(nnfin.load_run(folder, model=")
    run = nnfin.load_run(tmp_path / "own", model=LogGamma())
    run.model.train()
    done = nnfin.export(run, tmp_path / "own.pt2", check=True)  # .pt2 keeps lgamma
    assert done.max_rel_error <= 1e-5
    assert run.model.training  # the run's own network is left as it was
    with pytest.raises(FileFormatError, match="both a feature and a target"):
        nnfin.export(Run(nnfin.load_config({}), MLP(1, 1, [2]), None, ["y"], ["y"]),
                     tmp_path / "same.onnx")
