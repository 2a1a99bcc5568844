"""Model files that never execute code: safetensors weights plus a JSON description.

``model.safetensors`` holds the parameters (and the data scaling as ``scaler.*`` tensors);
``model.json`` holds the architecture, the feature/target names, the library versions and the
sha256 of the weights file, which is checked on load.

>>> from nnfin.models import MLP
>>> save_model("out", MLP(1, 1, [6]), {"kind": "mlp", "neurons": [6]},  # doctest: +SKIP
...            features=["x"], targets=["y"])
>>> model, spec, scaler = load_model("out")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nnfin import files
from nnfin.config import validate
from nnfin.data.scaling import Standardizer
from nnfin.errors import ConfigError, FileFormatError, NNFinError
from nnfin.version import __version__

FORMAT = "nnfin-model"
FORMAT_VERSION = 1
WEIGHTS, SPEC = "model.safetensors", "model.json"


# Words in torch's weights_only refusals across versions: "Weights only load failed",
# "Unsupported global: GLOBAL x.y was not an allowed global", "unsupported GLOBAL x.y whose
# module x is blocked", "Unsupported operand", ...
REFUSAL_MARKERS = ("weights only", "weights_only", "global", "unsupported", "blocked",
                   "allowlist", "safe_globals")


def pickle_refusal(exc: BaseException) -> str | None:
    """When ``exc`` is torch's weights_only unpickler refusing a global (any torch version's
    wording): ``" (global os.system)"``, or ``""`` when it names none; else ``None``.

    >>> pickle_refusal(pickle.UnpicklingError("Unsupported global: GLOBAL posix.system"))
    ' (global posix.system, i.e. os.system)'
    """
    if not isinstance(exc, pickle.UnpicklingError) or not _is_refusal(exc):
        return None
    return _refused_global(exc)


def _is_refusal(exc: BaseException) -> bool:
    """Whether torch's weights_only unpickler refused a global (any torch version's wording)."""
    text = str(exc).lower()
    return any(marker in text for marker in REFUSAL_MARKERS)


def _refused_global(exc: BaseException) -> str:
    """`` (global os.system)`` for the global torch refused, or ``""`` when it names none."""
    text = str(exc)
    found = (re.search(r"\bGLOBAL\s+([\w.]+)", text)
             or re.search(r"\bglobal:?\s+([A-Za-z_][\w]*(?:\.[\w]+)+)", text, re.IGNORECASE))
    if not found:
        return ""
    name = found.group(1).rstrip(".")
    for builtin, public in (("posix.", "os."), ("nt.", "os.")):
        if name.startswith(builtin):
            name += f", i.e. {public}{name.removeprefix(builtin)}"
    return f" (global {name})"


USER_KIND = "user"  # model.json's "model" kind for a network given as fit(model=...)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    return {"nnfin": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_model(folder: str | Path, model: nn.Module, model_cfg: dict[str, Any], *,
               features: list[str], targets: list[str], scaler: Standardizer | None = None,
               dtype: str = "float32", force: bool = True,
               input_ranges: dict[str, tuple[float, float]] | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder``; returns the JSON path.

    ``force=False`` refuses a folder that already holds either file (before writing any).
    ``input_ranges`` (feature -> ``[min, max]`` of the training inputs) is stored as
    ``"input_ranges"``: the box the network was trained on (``nnfin calibrate`` stays inside it).
    """
    folder = Path(folder)
    weights, path = folder / WEIGHTS, folder / SPEC
    for target in (weights, path):
        files.check_target(target, force=force)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if scaler is not None:
        tensors.update(scaler.tensors())
    files.write_with(weights, lambda tmp: save_file(tensors, str(tmp)), force=force)
    spec = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model_cfg, "in_dim": len(features), "out_dim": len(targets),
        "features": features, "targets": targets, "dtype": dtype, "scaled": scaler is not None,
        "weights": WEIGHTS, "sha256": sha256_file(weights), "versions": versions(),
    }
    if input_ranges is not None:
        spec["input_ranges"] = {k: [float(lo), float(hi)] for k, (lo, hi) in input_ranges.items()}
    files.write_json(path, spec, force=True)  # pairs with the weights just written
    return path


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / SPEC
    elif p.suffix == ".safetensors":
        p = p.with_name(SPEC)
    if not p.exists():
        raise FileFormatError(f"model file {str(p)!r} does not exist")
    return p


def read_spec(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read and check ``model.json``; returns the spec and the weights path."""
    spec_path = _resolve(path)
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"model file {str(spec_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise FileFormatError(f"model file {str(spec_path)!r} is not an nnfin model description")
    version = spec.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FileFormatError(f"model file {str(spec_path)!r}: \"format_version\" = {version!r} "
                              "must be an integer")
    if version > FORMAT_VERSION:
        raise FileFormatError(f"model file {str(spec_path)!r} has format version "
                              f"{spec['format_version']}; this nnfin reads up to {FORMAT_VERSION}")
    for names, dim in (("features", "in_dim"), ("targets", "out_dim")):
        value = spec.get(names)
        if value is None:
            raise FileFormatError(f"model file {str(spec_path)!r} has no \"{names}\" (the list of "
                                  f"{names[:-1]} column names)")
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, str) and v for v in value)):
            raise FileFormatError(f"model file {str(spec_path)!r}: \"{names}\" = "
                                  f"{json.dumps(value)[:200]} must be a non-empty list of column names")
        twice = next((v for v in value if value.count(v) > 1), None)
        if twice is not None:
            raise FileFormatError(f"model file {str(spec_path)!r}: \"{names}\" names {twice!r} "
                                  "twice")
        width = spec.get(dim, len(value))
        if width != len(value) or isinstance(width, bool):
            raise FileFormatError(f"model file {str(spec_path)!r}: \"{dim}\" = "
                                  f"{json.dumps(width)[:200]} does not match the {len(value)} "
                                  f"\"{names}\" {json.dumps(value)[:200]}")
        spec[dim] = len(value)
    if not isinstance(spec.get("model"), dict):
        raise FileFormatError(f"model file {str(spec_path)!r}: \"model\" = "
                              f"{json.dumps(spec.get('model'))[:200]} must be a table of the "
                              "architecture ({\"kind\": \"mlp\", ...})")
    dtype = spec.get("dtype", "float32")
    if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise FileFormatError(f"model file {str(spec_path)!r}: \"dtype\" = {json.dumps(dtype)[:200]} "
                              "is not a torch dtype (e.g. \"float32\")")
    name = spec.get("weights", WEIGHTS)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise FileFormatError(f"model file {str(spec_path)!r}: \"weights\" = "
                              f"{json.dumps(name)[:200]} must be the name of a file beside it "
                              f"(e.g. \"{WEIGHTS}\")")
    try:
        if spec["model"].get("kind") != USER_KIND:  # a network of the user's own: no [model] table
            validate({"model": spec["model"]})
    except ConfigError as exc:
        raise FileFormatError(f"model file {str(spec_path)!r}: {exc}") from None
    weights = spec_path.parent / name
    if not weights.exists():
        raise FileFormatError(f"weights file {str(weights)!r} does not exist")
    return spec, weights


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (``None`` when its layout is sound).

    Reads only the header: 8 bytes of little-endian header length, then a JSON table whose
    ``data_offsets`` must lie inside the file.

    >>> safetensors_problem(Path("runs/my-run/model.safetensors"))  # doctest: +SKIP
    'is truncated (1000 bytes; its header describes 1392)'
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        header = f.read(n) if 0 < n <= min(size - 8, 100 << 20) else f.read(1)
    if size == 0:
        return "is empty"
    if not header.startswith(b"{") and (head[:2] == b"PK" or head[:1] == b"\x80"):
        return "is a PyTorch/pickle file, not safetensors (nnfin never unpickles model files)"
    if len(head) < 8 or not 2 <= n <= 100 << 20 or not header.startswith(b"{"):
        return "is not a safetensors file"
    if 8 + n > size:
        return f"is truncated ({size} bytes; its header alone needs {8 + n})"
    try:
        table = json.loads(header)
        end = max((int(v["data_offsets"][1]) for k, v in table.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "is not a safetensors file (unreadable header)"
    if 8 + n + end > size:
        return f"is truncated ({size} bytes; its header describes {8 + n + end})"
    return None


def load_model(path: str | Path, *, device: str | torch.device = "cpu", model: nn.Module | None = None
               ) -> tuple[nn.Module, dict[str, Any], Standardizer | None]:
    """Rebuild a saved model (no pickle): returns ``(model, spec, scaler)`` on ``device``.

    ``model``: a module to load the weights into, needed for a network of the user's own
    (``"kind": "user"`` in ``model.json``: nnfin cannot rebuild its class).
    """
    from nnfin.models import build_model  # late import: models import config only

    spec, weights = read_spec(path)
    user = spec["model"].get("kind") == USER_KIND
    if user and model is None:
        raise FileFormatError(f"{str(weights.with_name(SPEC))!r} holds a network of your own "
                              f"(class {spec['model'].get('class')!r}); pass model=YourNet(...) "
                              "built as it was trained, e.g. nnfin.load_run(folder, model=net)")
    problem = safetensors_problem(weights)
    if problem:
        raise FileFormatError(f"weights file {str(weights)!r} {problem}")
    digest = sha256_file(weights)
    if spec.get("sha256") != digest:
        raise FileFormatError(f"weights file {str(weights)!r} does not match the sha256 in "
                              f"{SPEC} (file changed or corrupted)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"weights file {str(weights)!r} cannot be read: {exc}") from None
    try:
        if model is None:
            model = build_model(validate({"model": spec["model"]}).model, in_dim=spec["in_dim"],
                                out_dim=spec["out_dim"])
    except NNFinError as exc:
        raise FileFormatError(f"model file {str(weights.with_name(SPEC))!r}: {exc}") from None
    state = {k: v for k, v in tensors.items() if not k.startswith("scaler.")}
    dtype = getattr(torch, spec.get("dtype", "float32"))
    model = model.to(dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        reason = " ".join(line.strip() for line in first[:2])
        raise FileFormatError(f"weights file {str(weights)!r} do not fit the architecture in "
                              f"{SPEC}: {reason}") from None
    return model.to(device).eval(), spec, Standardizer.from_tensors(tensors)
