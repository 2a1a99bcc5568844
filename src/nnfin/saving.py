"""Saving and loading models: the lecture's two ``torch.save`` formats and nnfin's safe one.

The lecture saves a model two ways; nnfin adds a third that never runs code when loaded:

* ``save(model, "model.pth", whole=True)`` - ``torch.save(model, path)``: structure and
  parameters, pickled (loading it unpickles Python objects, which can run arbitrary code);
* ``save(model, "model.pt", whole=False)`` - ``torch.save(model.state_dict(), path)``;
  :func:`save_training_state` writes the lecture's ``{'epoch', 'model_state_dict',
  'optimizer_state_dict', 'loss'}`` dict to restart training;
* ``save(model, "folder")`` (the default) - ``model.safetensors`` + ``model.json`` (see
  :mod:`nnfin.io`): tensors and a JSON description, the format of every run folder.

:func:`load` reads all of them. Torch files go through ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers; a file that needs full unpickling (a whole pickled
model, or anything else holding Python objects) is refused unless ``trust=True``. Everything is
mapped to the CPU (or ``device``), so a model saved on CUDA or MPS loads anywhere.

>>> import nnfin
>>> from nnfin.models import MLP
>>> model = MLP(1, 1, [6, 6], "sigmoid")
>>> folder = nnfin.save(model, "out/net")                 # doctest: +SKIP
>>> nnfin.load(folder)                                    # doctest: +SKIP
>>> nnfin.save(model, "model.pth", whole=True)            # doctest: +SKIP
>>> nnfin.load("model.pth", trust=True)                   # doctest: +SKIP
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnfin import files
from nnfin.config import ModelConfig
from nnfin.data.scaling import Standardizer
from nnfin.errors import FileFormatError
from nnfin.io import SPEC, WEIGHTS, load_model, pickle_refusal, safetensors_problem, save_model
from nnfin.models import MLP, MLPLow, Polynomial
from nnfin.runs import Run
from nnfin.train.checkpoint import MAGIC, load_checkpoint

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar", ".bin")
TRUST_HINT = "pass --trust (CLI) / trust=True (Python) only for a file you trust"
def model_config(model: nn.Module) -> tuple[dict[str, Any], int, int]:
    """The ``[model]`` table and input/output widths that rebuild one of nnfin's models.

    >>> model_config(MLP(2, 1, [8], "tanh"))[0]["neurons"]
    [8]
    """
    if isinstance(model, Polynomial):
        cfg, in_dim, out_dim = {"kind": "polynomial", "degree": model.degree}, 1, 1
    elif isinstance(model, (MLP, MLPLow)):
        cfg = {"kind": "mlp-low" if isinstance(model, MLPLow) else "mlp",
               "neurons": list(model.neurons), "activation": model.activation}
        in_dim, out_dim = model.in_dim, model.out_dim
    else:
        raise FileFormatError(
            f"cannot describe a {type(model).__name__} in model.json: the safe format rebuilds "
            "nnfin's MLP, MLPLow and Polynomial; save other models with whole=False (state dict)")
    return ModelConfig(**cfg).model_dump(mode="json"), in_dim, out_dim


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(model: nn.Module | Run, path: str | Path, *, whole: bool | None = None,
         features: Sequence[str] | None = None, targets: Sequence[str] | None = None,
         scaler: Standardizer | None = None, force: bool = False) -> Path:
    """Save ``model`` (or a :class:`Run`); returns what to pass to :func:`load`.

    ``whole=True``: ``torch.save(model, path)`` (the lecture's first way; loading needs trust).
    ``whole=False``: ``torch.save(model.state_dict(), path)``. Unset: a ``.pth/.pt/.ckpt`` path
    gets the state dict, any other path is a folder in the safe format (``model.safetensors`` +
    ``model.json``; a path named ``model.safetensors`` means its folder). ``features``,
    ``targets`` and ``scaler`` are stored in the safe format (default names ``x1..``, ``y``;
    a :class:`Run` brings its own). Files are written atomically; an existing file is refused
    unless ``force=True`` (then it is replaced in one step: a reader never sees half of it).

    >>> save(MLP(1, 1, [6]), "out/net")  # doctest: +SKIP
    PosixPath('out/net')
    """
    p = Path(path)
    suffix = p.suffix.lower()
    net = model.model if isinstance(model, Run) else model
    if not isinstance(net, nn.Module):
        raise TypeError(f"save() needs a torch.nn.Module or an nnfin Run, got {type(model).__name__}")
    if whole is not None or suffix in TORCH_SUFFIXES:
        if suffix in (".safetensors", ".json"):
            raise FileFormatError(f"{str(p)!r}: whole={whole} writes a torch.save file; use a .pth "
                                  "or .pt path, or leave whole unset for the safetensors format")
        if p.is_dir():
            raise FileFormatError(f"{str(p)!r} is a folder; torch.save needs a file path such as "
                                  f"{str(p / 'model.pth')!r}")
        files.check_target(p, force=force)
        files.write_bytes(p, _torch_bytes(net if whole else net.state_dict()), force=force)
        return p
    folder = p
    if suffix in (".safetensors", ".json"):
        if p.name not in (WEIGHTS, SPEC):
            raise FileFormatError(f"{str(p)!r}: the safe format is a folder holding {WEIGHTS} and "
                                  f"{SPEC}; pass the folder (or {str(p.with_name(WEIGHTS))!r})")
        folder = p.parent
    if folder.exists() and not folder.is_dir():
        raise FileFormatError(f"{str(folder)!r} is a file; the safe format needs a folder")
    cfg, in_dim, out_dim = model_config(net)
    if isinstance(model, Run):
        features, targets = features or model.features, targets or model.targets
        scaler = scaler if scaler is not None else model.scaler
    feats = list(features) if features else (["x"] if in_dim == 1 else
                                               [f"x{i + 1}" for i in range(in_dim)])
    targs = list(targets) if targets else (["y"] if out_dim == 1 else
                                           [f"y{i + 1}" for i in range(out_dim)])
    if len(feats) != in_dim or len(targs) != out_dim:
        raise FileFormatError(f"{len(feats)} feature and {len(targs)} target name(s) given; the "
                              f"model has {in_dim} input(s) and {out_dim} output(s)")
    dtype = str(next(net.parameters()).dtype).removeprefix("torch.")
    save_model(folder, net, cfg, features=feats, targets=targs, scaler=scaler, dtype=dtype, force=force)
    return folder


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        *, epoch: int, loss: float | torch.Tensor, force: bool = True,
                        **extra: Any) -> Path:
    """Write the lecture's checkpoint dict with ``torch.save`` (loads with weights_only=True).

    The lecture saves it every few epochs over the same file, so it is replaced by default
    (atomically); ``force=False`` refuses an existing file.

    >>> save_training_state("model.pt", model, optimizer, epoch=5, loss=0.01)  # doctest: +SKIP
    """
    if torch.is_tensor(loss) and loss.numel() == 1:
        loss = loss.item()
    state = {"epoch": epoch, "model_state_dict": model.state_dict(),
             "optimizer_state_dict": optimizer.state_dict(), "loss": loss, **extra}
    return files.write_bytes(path, _torch_bytes(state), force=force)


def load_training_state(path: str | Path, model: nn.Module,
                        optimizer: torch.optim.Optimizer | None = None, *,
                        trust: bool = False) -> tuple[int, Any]:
    """Restore a :func:`save_training_state` file into ``model`` (and ``optimizer``).

    Returns ``(epoch, loss)``; call ``model.train()`` and continue the training loop.

    >>> epoch, loss = load_training_state("model.pt", model, optimizer)  # doctest: +SKIP
    """
    state = load(path, trust=trust)
    if not isinstance(state, dict) or "model_state_dict" not in state:
        raise FileFormatError(f"model file {str(path)!r} is not a training state "
                              "(no 'model_state_dict' entry)")
    try:
        model.load_state_dict(state["model_state_dict"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer_state_dict"])
    except (RuntimeError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).strip().splitlines()[:2])
        raise FileFormatError(f"model file {str(path)!r} does not fit this model/optimizer: "
                              f"{reason}") from None
    return state.get("epoch", 0), state.get("loss")


# ------------------------------------------------------------------------ loading


def load(path: str | Path, *, trust: bool = False, device: str | torch.device = "cpu") -> Any:
    """Load what :func:`save` (or plain ``torch.save``) wrote, on ``device`` (default CPU).

    * a folder with ``model.json`` (a run or model folder), ``model.json`` or
      ``model.safetensors`` -> the rebuilt model (eval mode); no pickle is involved. Calling it,
      ``model(x)``, works in the standardized units it was trained in; ``model.predict(x)``
      works in the data's units (the saved scaling applied and undone, as
      :func:`nnfin.load_run`'s ``run.predict``), and ``model.scaler`` is that scaling;
    * another ``.safetensors`` file -> its dict of tensors;
    * an nnfin checkpoint (``checkpoints/*.ckpt``) -> its state dict, checksum verified;
    * any other file -> ``torch.load(path, map_location=device, weights_only=True)``: a state
      dict, the lecture's checkpoint dict... A file holding pickled Python objects (a whole
      model from ``torch.save(model, path)``) is refused unless ``trust=True``, which unpickles
      it (``weights_only=False``) and so runs whatever code it carries.

    >>> model = load("runs/my-run")  # doctest: +SKIP
    >>> checkpoint = load("model.pt"); checkpoint["epoch"]  # doctest: +SKIP
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"model file {str(p)!r} does not exist")
    if p.is_dir():
        if not (p / SPEC).is_file():
            raise FileFormatError(f"folder {str(p)!r} holds no {SPEC} (not an nnfin model or run "
                                  "folder)")
        return _predictor(p, device)
    if p.suffix.lower() == ".json" or (p.suffix.lower() == ".safetensors"
                                       and (p.parent / SPEC).is_file()):
        return _predictor(p, device)
    if p.suffix.lower() == ".safetensors":
        return _load_tensors(p, device)
    return _load_torch(p, trust=trust, device=device)


def _predictor(path: Path, device: str | torch.device) -> nn.Module:
    """The saved model, with ``predict`` (data units) and ``scaler`` attached."""
    from nnfin.config import load_config

    model, spec, scaler = load_model(path, device=device)
    run = Run(load_config({}), model, scaler, spec["features"], spec["targets"])
    model.predict = run.predict  # instance attributes: the module's class and state dict are as ever
    model.scaler = scaler
    return model


def _load_tensors(p: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    problem = safetensors_problem(p)
    if problem:
        raise FileFormatError(f"model file {str(p)!r} {problem}")
    try:
        return load_file(str(p), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise FileFormatError(f"model file {str(p)!r} cannot be read: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else "") or type(exc).__name__


def _check_zip(p: Path) -> None:
    """Verify the zip archive torch.save writes: readable, and every entry's CRC-32 intact."""
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FileFormatError(f"model file {str(p)!r} is truncated or corrupted (unreadable zip "
                              f"archive: {_first_line(exc)})") from None
    if bad is not None:
        raise FileFormatError(f"model file {str(p)!r} was changed or corrupted after saving "
                              f"(checksum of its entry {bad!r} does not match)")


def _load_torch(p: Path, *, trust: bool, device: str | torch.device) -> Any:
    size = p.stat().st_size
    if size == 0:
        raise FileFormatError(f"model file {str(p)!r} is empty")
    with open(p, "rb") as f:
        head = f.read(9)
        f.seek(max(0, size - 40))
        tail = f.read(40)
    if len(tail) == 40 and tail[:8] == MAGIC:
        return load_checkpoint(p)  # nnfin's own checkpoints: sha256 trailer, weights only
    if head[:4] == b"PK\x03\x04":
        _check_zip(p)
    elif head[:1] != b"\x80":  # neither torch's zip format nor a (legacy) pickle stream
        if len(head) == 9 and head[8:9] == b"{":
            return _load_tensors(p, device)
        looks = " (it looks like text)" if head.isascii() else ""
        raise FileFormatError(f"model file {str(p)!r} is not a PyTorch file{looks}; expected "
                              "a torch.save zip archive, a safetensors file or a model folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about pickle protocols
            return torch.load(p, map_location=device, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        refused = None if trust else pickle_refusal(exc)
        if refused is not None:
            raise FileFormatError(
                f"model file {str(p)!r} holds pickled Python objects{refused} "
                f"that can run code when loaded, so nnfin refused to unpickle it; "
                f"{TRUST_HINT}") from None
        raise FileFormatError(f"model file {str(p)!r} is truncated or corrupted: "
                              f"{_first_line(exc)}") from None
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise FileFormatError(f"model file {str(p)!r} needs Python code that is not available "
                              f"here ({_first_line(exc)}); import or define it first") from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, KeyError, ...
        raise FileFormatError(f"model file {str(p)!r} is truncated or corrupted "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
