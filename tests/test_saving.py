"""nnfin.save / nnfin.load: the lecture's formats, the safe format, and files that must not load."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn, serialization

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.errors import FileFormatError
from nnfin.models import MLP, MLPLow, Polynomial
from nnfin.saving import load_training_state, save_training_state
from nnfin.train.checkpoint import MAGIC, load_checkpoint


class Evil:
    """Unpickling this writes ``marker`` - what a malicious model file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def evil_files(folder: Path, marker: Path) -> dict[str, bytes]:
    """Malicious payloads in every shape a model file can take."""
    buf = io.BytesIO()
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "loss": Evil(marker)}, buf)
    ckpt = io.BytesIO()
    torch.save({"format": "nnfin-checkpoint", "format_version": 1, "model": Evil(marker)}, ckpt)
    payload = ckpt.getvalue()
    whole = io.BytesIO()
    torch.save(Evil(marker), whole)
    return {
        "raw-pickle": pickle.dumps(Evil(marker), protocol=2),
        "raw-pickle-5": pickle.dumps(Evil(marker), protocol=5),
        "torch-zip": whole.getvalue(),
        "torch-zip-dict": buf.getvalue(),
        # a valid-looking nnfin trailer: magic + sha256 of the payload, so the checksum passes
        "with-trailer": payload + MAGIC + hashlib.sha256(payload).digest(),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained") / "run"
    nnfin.fit(overrides=[*FAST, "run.plots=false", f"run.dir={folder}"])
    return folder


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "marker"
    yield m
    assert not m.exists(), "a malicious pickle ran its code"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("model", [MLP(2, 1, [5, 4], "tanh"), MLPLow(1, 2, [3], "relu"),
                                   Polynomial(3)], ids=["mlp", "mlp-low", "polynomial"])
def test_safe_format_rebuilds_nnfin_models(model, tmp_path):
    folder = nnfin.save(model, tmp_path / "net")
    assert (folder / "model.safetensors").exists() and (folder / "model.json").exists()
    x = torch.randn(7, 1 if isinstance(model, Polynomial) else model.in_dim)
    for where in (folder, folder / "model.safetensors", folder / "model.json"):
        loaded = nnfin.load(where)
        assert type(loaded) is type(model) and not loaded.training
        assert torch.equal(loaded(x), model(x))


def test_state_dict_and_lecture_dict_load_without_trust(tmp_path):
    model = MLP(1, 1, [6, 6])
    nnfin.save(model, tmp_path / "sd.pth", whole=False)
    nnfin.save(model, tmp_path / "default.pt")  # a torch suffix alone means the state dict
    for name in ("sd.pth", "default.pt"):
        state = nnfin.load(tmp_path / name)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    save_training_state(tmp_path / "model.pt", model, optimizer, epoch=5, loss=torch.tensor(0.01))
    ckpt = nnfin.load(tmp_path / "model.pt")
    assert set(ckpt) == {"epoch", "model_state_dict", "optimizer_state_dict", "loss"}
    assert ckpt["epoch"] == 5 and ckpt["loss"] == pytest.approx(0.01)


def test_a_benign_whole_model_needs_trust(tmp_path):
    model = MLP(1, 1, [6, 6])
    path = nnfin.save(model, tmp_path / "model.pth", whole=True)  # torch.save(model, path)
    with pytest.raises(FileFormatError) as exc:
        nnfin.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and "model.pth" in msg and "pickled Python objects" in msg
    assert "run code" in msg and "trust=True" in msg and "--trust" in msg
    loaded = nnfin.load(path, trust=True)
    assert isinstance(loaded, MLP) and torch.equal(loaded(torch.ones(3, 1)), model(torch.ones(3, 1)))


def test_run_folders_and_checkpoints_load(run_dir):
    run = nnfin.load_run(run_dir)
    model = nnfin.load(run_dir)
    assert torch.equal(model(torch.ones(2, 1)), run.model(torch.ones(2, 1)))
    ckpt = nnfin.load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["format"] == "nnfin-checkpoint" and "optimizer" in ckpt
    again = nnfin.save(run, run_dir.parent / "copy")  # a Run keeps its names and scaling
    assert torch.equal(nnfin.load(again)(torch.ones(2, 1)), run.model(torch.ones(2, 1)))
    spec = json.loads((again / "model.json").read_text())
    assert spec["scaled"] and spec["features"] == run.features and spec["targets"] == run.targets


@pytest.fixture(params=["cuda:0", "mps"])
def saved_on(request):
    """Make torch.save tag CPU tensors with another device, as a file saved on a GPU is."""
    def tagger(storage):
        return request.param

    def never(obj, location):
        return None

    serialization.register_package(0, tagger, never)
    yield request.param
    serialization._package_registry[:] = [e for e in serialization._package_registry
                                          if e[1] is not tagger]


def test_a_model_saved_on_a_gpu_loads_on_the_cpu(saved_on, tmp_path):
    model = MLP(1, 1, [4])
    nnfin.save(model, tmp_path / "sd.pth", whole=False)
    nnfin.save(model, tmp_path / "whole.pth", whole=True)
    available = {"cuda:0": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[saved_on]:  # plain torch.load cannot restore it here
        with pytest.raises(RuntimeError):
            torch.load(tmp_path / "sd.pth", weights_only=True)
    state = nnfin.load(tmp_path / "sd.pth")
    assert state["forwardpass.0.weight"].device.type == "cpu"
    assert nnfin.load(tmp_path / "whole.pth", trust=True).layer1.weight.device.type == "cpu"


# ------------------------------------------------------------------------ the lecture's flow


def _train(model, optimizer, x, y, batches):
    loss_fn = nn.MSELoss()
    for idx in batches:
        optimizer.zero_grad()
        loss = loss_fn(model.forward(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    return loss


def test_lecture_restart_from_a_checkpoint_continues_identically(tmp_path):
    x = torch.linspace(-math.pi / 2, 3 * math.pi / 2, 200).reshape(-1, 1)
    y = torch.cos(x)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randperm(200, generator=gen)[:32] for _ in range(60)]  # one fixed order
    in_dim, out_dim, neurons, learning_rate = 1, 1, [6, 6], 0.01

    torch.manual_seed(0)
    reference = MLP(in_dim, out_dim, neurons, "sigmoid")
    _train(reference, torch.optim.Adam(reference.parameters(), lr=learning_rate), x, y, batches)

    torch.manual_seed(0)
    model = MLP(in_dim, out_dim, neurons, "sigmoid")
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss = _train(model, optimizer, x, y, batches[:25])
    PATH = tmp_path / "model.pt"
    torch.save({"epoch": 25, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss.item()}, PATH)
    del model, optimizer

    torch.manual_seed(99)  # other initial weights: everything must come from the file
    model_reloaded = MLP(in_dim, out_dim, neurons, "sigmoid")
    optimizer = torch.optim.Adam(model_reloaded.parameters(), lr=learning_rate)
    checkpoint = nnfin.load(PATH)
    model_reloaded.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    epoch, loss = checkpoint["epoch"], checkpoint["loss"]
    model_reloaded.train()
    _train(model_reloaded, optimizer, x, y, batches[epoch:])
    for a, b in zip(reference.parameters(), model_reloaded.parameters(), strict=True):
        assert torch.equal(a, b)

    # the same through nnfin's helpers
    torch.manual_seed(0)
    model = MLP(in_dim, out_dim, neurons, "sigmoid")
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss = _train(model, optimizer, x, y, batches[:25])
    save_training_state(tmp_path / "state.pt", model, optimizer, epoch=25, loss=loss)
    again = MLP(in_dim, out_dim, neurons, "sigmoid")
    opt2 = torch.optim.Adam(again.parameters(), lr=learning_rate)
    epoch, _ = load_training_state(tmp_path / "state.pt", again, opt2)
    _train(again.train(), opt2, x, y, batches[epoch:])
    pairs = zip(reference.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(FileFormatError, match="does not fit"):
        load_training_state(tmp_path / "state.pt", MLP(1, 1, [7]))


# ------------------------------------------------------------------------ malicious pickles


def test_the_payload_is_live(tmp_path):
    """Sanity check: plain unpickling does run it - the tests below are not vacuous."""
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Evil(live)))
    assert live.read_text() == "pwned"
    live.unlink()
    (tmp_path / "evil.pth").write_bytes(evil_files(tmp_path, live)["torch-zip"])
    nnfin.load(tmp_path / "evil.pth", trust=True)  # trust is the explicit opt-in
    assert live.exists()


@pytest.mark.parametrize("kind", ["raw-pickle", "raw-pickle-5", "torch-zip", "torch-zip-dict",
                                  "with-trailer"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_nnfin_load_never_unpickles(kind, suffix, tmp_path, marker):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(evil_files(tmp_path, marker)[kind])
    with pytest.raises(FileFormatError) as exc:
        nnfin.load(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    if kind != "with-trailer":
        assert "pickled Python objects" in str(exc.value) and "trust=True" in str(exc.value)
    with pytest.raises(FileFormatError):
        load_training_state(path, MLP(1, 1, [2]))


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-zip", "with-trailer"])
def test_load_checkpoint_never_unpickles(kind, tmp_path, marker):
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(evil_files(tmp_path, marker)[kind])
    with pytest.raises(FileFormatError, match=r"last\.ckpt"):
        load_checkpoint(path)


@pytest.mark.parametrize("target", ["model.safetensors", "model.json", "checkpoints"])
def test_run_folders_never_unpickle(target, run_dir, marker, cli, tmp_path):
    evil = evil_files(tmp_path, marker)
    if target == "checkpoints":
        for name in ("last.ckpt", "prev.ckpt", "best.ckpt"):
            (run_dir / "checkpoints" / name).write_bytes(evil["with-trailer"])
    else:
        (run_dir / target).write_bytes(evil["torch-zip"])
    before = snapshot(run_dir)
    (tmp_path / "in.csv").write_text("x\n0.5\n")
    out = tmp_path / "out.csv"
    if target == "checkpoints":  # the model files never read checkpoints; resume refuses them
        assert nnfin.load_run(run_dir).predict([[0.5]]).shape == (1, 1)
        assert cli("inspect", str(run_dir)).code == 0
        assert cli("predict", str(run_dir), str(tmp_path / "in.csv"), "-o", str(out)).code == 0
        with pytest.raises(FileFormatError, match="no usable checkpoint"):
            nnfin.resume(run_dir, epochs=5)
        assert_one_line_error(cli("resume", str(run_dir), "--epochs", "5", "-q"), "last.ckpt")
    else:
        for call in (nnfin.load_run, nnfin.load, lambda d: nnfin.load(d / target)):
            with pytest.raises(FileFormatError, match=target):
                call(run_dir)
        assert_one_line_error(cli("inspect", str(run_dir)), target)
        assert_one_line_error(cli("predict", str(run_dir), str(tmp_path / "in.csv"), "-o",
                                  str(out)), target)
        assert not out.exists()
    assert snapshot(run_dir) == before


def test_cli_refuses_a_pickled_model_file(tmp_path, marker, cli):
    (tmp_path / "in.csv").write_text("x\n0.5\n")
    (tmp_path / "model.pth").write_bytes(evil_files(tmp_path, marker)["torch-zip"])
    res = cli("predict", str(tmp_path / "model.pth"), str(tmp_path / "in.csv"), "-o",
              str(tmp_path / "out.csv"))
    assert_one_line_error(res, "model.pth", "pickled Python objects", "--trust")
    assert not (tmp_path / "out.csv").exists()


# ------------------------------------------------------------------------ bad model files


def _break(run_dir: Path, how: str) -> str:
    """Damage the run's model files; returns a fragment the error must contain."""
    weights, spec = run_dir / "model.safetensors", run_dir / "model.json"
    data = weights.read_bytes()
    if how == "missing":
        weights.unlink()
        return "does not exist"
    if how == "truncated":
        weights.write_bytes(data[: len(data) - 10])
        return "is truncated"
    if how == "wrong-format":
        weights.write_text("these are not weights\n")
        return "is not a safetensors file"
    if how == "wrong-architecture":
        spec.write_text(spec.read_text().replace('"neurons": [\n      6,\n      6\n    ]',
                                                 '"neurons": [\n      6,\n      7\n    ]'))
        assert '"neurons": [\n      6,\n      7' in spec.read_text()
        return "do not fit the architecture"
    assert how == "tampered"
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    weights.write_bytes(bytes(flipped))
    return "does not match the sha256"


BREAKS = ["missing", "truncated", "wrong-format", "wrong-architecture", "tampered"]


@pytest.mark.parametrize("how", BREAKS)
def test_bad_model_files_are_one_line_errors(how, run_dir, cli, tmp_path):
    fragment = _break(run_dir, how)
    before = snapshot(run_dir)
    for call in (nnfin.load_run, nnfin.load):
        with pytest.raises(FileFormatError) as exc:
            call(run_dir)
        assert fragment in str(exc.value) and "model.safetensors" in str(exc.value)
        assert "\n" not in str(exc.value)
    assert_one_line_error(cli("inspect", str(run_dir)), fragment, "model.safetensors")
    (tmp_path / "in.csv").write_text("x\n0.5\n")
    out = tmp_path / "out.csv"
    out.write_text("keep me\n")
    res = cli("predict", str(run_dir), str(tmp_path / "in.csv"), "-o", str(out), "--force")
    assert_one_line_error(res, fragment, "model.safetensors")
    assert out.read_text() == "keep me\n" and snapshot(run_dir) == before


def test_bad_torch_files_are_one_line_errors(tmp_path):
    model = MLP(1, 1, [6])
    good = nnfin.save(model, tmp_path / "good.pth", whole=False).read_bytes()
    with zipfile.ZipFile(io.BytesIO(good)) as z:  # where the first tensor's bytes start
        entry = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    name_len, extra_len = struct.unpack("<HH", good[entry.header_offset + 26:entry.header_offset + 30])
    tampered = bytearray(good)
    tampered[entry.header_offset + 30 + name_len + extra_len + 5] ^= 0x01
    cases = {
        "missing.pth": (None, "does not exist"),
        "empty.pth": (b"", "is empty"),
        "truncated.pth": (good[: len(good) // 2], "is truncated or corrupted"),
        "text.pt": (b"epoch,loss\n5,0.01\n", "is not a PyTorch file"),
        "tampered.pth": (bytes(tampered), "was changed or corrupted"),
        "other.safetensors": (b"\x05\x00\x00\x00\x00\x00\x00\x00{\"a\"", "is truncated"),
    }
    messages = set()
    for name, (data, fragment) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(FileFormatError) as exc:
            nnfin.load(tmp_path / name)
        msg = str(exc.value)
        assert fragment in msg and name in msg and "\n" not in msg, msg
        messages.add(msg.split(name)[1])
    assert len(messages) == len(cases)


def test_save_refuses_what_the_safe_format_cannot_describe(tmp_path):
    with pytest.raises(FileFormatError, match="Sequential"):
        nnfin.save(nn.Sequential(nn.Linear(1, 1)), tmp_path / "net")
    with pytest.raises(FileFormatError, match="folder"):
        nnfin.save(MLP(1, 1, [2]), tmp_path / "weights.safetensors")
    with pytest.raises(FileFormatError, match="whole=True"):
        nnfin.save(MLP(1, 1, [2]), tmp_path / "model.safetensors", whole=True)
    with pytest.raises(FileFormatError, match=r"no model\.json"):
        nnfin.load(tmp_path)
