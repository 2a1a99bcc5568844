"""Training checkpoints that never lie: atomic writes, a checksum, and a fallback.

``last.ckpt`` is rotated to ``prev.ckpt`` only once the new checkpoint is complete on disk and
only when ``last.ckpt`` itself passed its checksum, so at every instant at least one verified
checkpoint exists and a corrupt file never replaces a good one.

A checkpoint is a plain dict (weights, optimizer, scheduler, sampler and RNG states, callback
states, history, resolved config, data hash) saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` - no code runs on load. The file ends with a 40-byte
trailer (magic + sha256 of the payload), so truncation and corruption are detected.

>>> save_checkpoint("ckpt/last.ckpt", {"epoch": 3})  # doctest: +SKIP
>>> load_checkpoint("ckpt/last.ckpt")["epoch"]  # doctest: +SKIP
3
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nnfin import files
from nnfin.errors import FileFormatError
from nnfin.io import pickle_refusal
from nnfin.train.callbacks import Callback

if TYPE_CHECKING:
    from nnfin.config import Config
    from nnfin.train.loop import Trainer

MAGIC = b"NNFINCK1"  # 8 bytes, then 32 bytes of sha256
FORMAT_VERSION = 1


def _plain(obj: Any) -> Any:
    """Make a state loadable with ``weights_only=True`` (NumPy arrays become tensors)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(obj.copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unplain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: _unplain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unplain(v) for v in obj)
    return obj


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file: ``torch.save`` payload, magic, sha256 of the payload."""
    buf = io.BytesIO()
    torch.save({"format": "nnfin-checkpoint", "format_version": FORMAT_VERSION,
                **_plain(state)}, buf)
    payload = buf.getvalue()
    return payload + MAGIC + hashlib.sha256(payload).digest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Serialize ``state`` and write it atomically with a checksum trailer (replacing ``path``)."""
    return files.write_bytes(path, encode_checkpoint(state), force=True)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a sound checkpoint file (missing, truncated, checksum); ``None`` if sound."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if len(raw) < 40 or raw[-40:-32] != MAGIC:
        return "is truncated or not an nnfin checkpoint"
    if hashlib.sha256(raw[:-40]).digest() != raw[-32:]:
        return "is corrupted (checksum mismatch)"
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated, corrupted or foreign file is a FileFormatError."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"checkpoint {str(path)!r} does not exist")
    raw = path.read_bytes()
    if len(raw) < 40 or raw[-40:-32] != MAGIC:
        raise FileFormatError(f"checkpoint {str(path)!r} is truncated or not an nnfin checkpoint")
    payload, digest = raw[:-40], raw[-32:]
    if hashlib.sha256(payload).digest() != digest:
        raise FileFormatError(f"checkpoint {str(path)!r} is corrupted (checksum mismatch)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = pickle_refusal(exc)
        if refused is not None:
            raise FileFormatError(f"checkpoint {str(path)!r} holds pickled Python objects{refused} "
                                  "that could run code; nnfin never unpickles checkpoints, so it "
                                  "was not loaded (nnfin did not write it, or it was replaced)") from None
        reason = str(exc).strip().splitlines()[0][:200]
        raise FileFormatError(f"checkpoint {str(path)!r} cannot be loaded safely: {reason}") \
            from None
    if not isinstance(state, dict) or state.get("format") != "nnfin-checkpoint":
        raise FileFormatError(f"checkpoint {str(path)!r} is not an nnfin checkpoint")
    return _unplain(state)


class CheckpointCallback(Callback):
    """Keeps ``last.ckpt`` (every ``every`` epochs, at the end and on Ctrl-C), the one before
    it as ``prev.ckpt``, and ``best.ckpt`` (lowest validation loss; only with validation data).

    The best state is snapshotted in memory when it improves and written with ``last.ckpt``,
    so a run whose loss improves every epoch does not write two files per epoch.
    """

    def __init__(self, folder: str | Path, cfg: Config, data_digest: str, *,
                 every: int = 1) -> None:
        self.folder, self.cfg, self.digest, self.every = Path(folder), cfg, data_digest, every
        self.best = float("inf")
        self._best_state: tuple[dict[str, Any], int] | None = None  # state, its epochs
        self._config: dict[str, Any] | None = None
        self._last_sound: bool | None = None  # whether last.ckpt on disk passed its checksum

    def _rotate(self) -> None:
        """Move a sound ``last.ckpt`` to ``prev.ckpt`` (a broken one is simply replaced)."""
        last = self.folder / "last.ckpt"
        if self._last_sound is None:
            self._last_sound = last.exists() and checkpoint_problem(last) is None
        if self._last_sound:
            files.rename(last, self.folder / "prev.ckpt")

    def _state_extras(self) -> dict[str, Any]:
        if self._config is None:  # the config does not change during a run
            self._config = self.cfg.to_dict()
        return {"config": self._config, "data_sha256": self.digest}

    def _state(self, trainer: Trainer) -> dict[str, Any]:
        return {**trainer.state_dict(), **self._state_extras()}

    def _snapshot(self, trainer: Trainer) -> tuple[dict[str, Any], int]:
        """The state now, copied, with its history as a length: epochs are only ever appended
        to the history, so the best state costs the same to keep at epoch 10 and at 1000."""
        state = copy.deepcopy(trainer.state_dict(history=False))
        return {**self._state_extras(), **state}, len(trainer.state.history)

    def write(self, trainer: Trainer) -> Path:
        """Write ``last.ckpt`` now (the previous one becomes ``prev.ckpt``) and a pending best."""
        last = self.folder / "last.ckpt"
        data = encode_checkpoint(self._state(trainer))
        files.write_bytes(last, data, force=True, before_commit=self._rotate)
        self._last_sound = True
        if self._best_state is not None:
            best, epochs = self._best_state
            best["train_state"]["history"] = copy.deepcopy(trainer.state.history[:epochs])
            save_checkpoint(self.folder / "best.ckpt", best)
            self._best_state = None
        return last

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if "val_loss" in logs and logs["val_loss"] < self.best:
            self.best = logs["val_loss"]
            self._best_state = self._snapshot(trainer)
        if trainer.state.epoch % self.every == 0:
            self.write(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.state.status != "diverged":
            self.write(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
