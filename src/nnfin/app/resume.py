"""Continue a run from its checkpoint, exactly: ``nnfin.resume(run_dir)``.

The run is rebuilt from the checkpoint's own resolved config (data, model, optimizer,
callbacks), the data are checked against the checkpoint's sha256, and the full training state
- weights, optimizer, scheduler, sampler and RNG states, callbacks, history - is restored. On
the CPU, a run interrupted at any epoch or step and resumed ends with the same weights, bit for
bit, as the run left alone.

>>> run = resume("runs/my-run", epochs=400)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from nnfin import files
from nnfin.app.fit import build_trainer, finish_run
from nnfin.config import Config, flatten, load_config, validate
from nnfin.errors import ConfigError, DataError, FileFormatError
from nnfin.io import USER_KIND
from nnfin.runs import Run
from nnfin.train.callbacks import Callback
from nnfin.train.checkpoint import load_checkpoint

# keys a resumed run may change; everything else must match the run's config
RESUMABLE_KEYS = {"train.epochs", "train.iterations", "train.progress", "run.checkpoint_every",
                  "run.plots", "train.distributed", "train.compile", "train.device",
                  "train.tensorboard", "train.tensorboard_every"}


class ResumeWarning(UserWarning):
    """A checkpoint was unusable and an older one was used instead."""


def find_checkpoint(run_dir: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """Load ``last.ckpt``, falling back to ``prev.ckpt``; returns state, path and notes."""
    folder = run_dir / "checkpoints"
    notes: list[str] = []
    for name in ("last.ckpt", "prev.ckpt"):
        path = folder / name
        if not path.exists():
            if name == "last.ckpt" and (folder / "prev.ckpt").exists():
                notes.append(f"checkpoint {str(path)!r} is missing (the run was stopped while "
                             "writing it); falling back to the previous checkpoint")
            continue
        try:
            state = load_checkpoint(path)
        except FileFormatError as exc:
            notes.append(f"{exc}; falling back to the previous checkpoint")
            continue
        return state, path, notes
    if notes:
        raise FileFormatError(f"no usable checkpoint in {str(folder)!r}: " + "; ".join(notes))
    raise FileFormatError(f"run {str(run_dir)!r} has no checkpoint to resume from "
                          f"({str(folder / 'last.ckpt')!r} does not exist)")


def _merge(saved: Config, overrides: Sequence[str]) -> Config:
    """Apply ``overrides`` to the saved config, refusing changes that would break the run."""
    cfg = load_config(saved, overrides)
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key) and key not in RESUMABLE_KEYS:
            raise ConfigError(f"cannot change {key} when resuming (the run has {old.get(key)!r}, "
                              f"got {new.get(key)!r}); start a new run with nnfin fit instead")
    return cfg


def _folder_complete(run_dir: Path, steps: int) -> bool:
    """Whether ``metrics.json`` and the model describe the run as of ``steps``."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return metrics.get("steps") == steps and (run_dir / "model.json").exists()


def resume(run_dir: str | Path, *, epochs: int | None = None, iterations: int | None = None,
           overrides: str | Sequence[str] = (), device: str | None = None,
           tensorboard: bool = False, compile: bool = False, distributed: bool = False,
           data: Any = None, model: nn.Module | None = None, callbacks: Sequence[Callback] = (),
           progress: bool = False, console: Any = None) -> Run:
    """Continue the run in ``run_dir`` from its last good checkpoint.

    ``epochs``/``iterations`` set a new total length (e.g. to extend a finished run).
    Resuming with other data or an incompatible config is refused with a message that names
    the difference. Notes about unusable checkpoints are issued as :class:`ResumeWarning`.
    ``device``, ``tensorboard``, ``compile`` and ``distributed`` are the command line's
    options. A run trained on in-memory data needs the same ``data`` again (its sha256 is
    checked), and a run of your own network the network, built as it was (``model``).

    >>> run = resume("runs/my-net", epochs=400, data=(x, y), model=MyNet())  # doctest: +SKIP
    """
    from nnfin.app.fit import option_overrides

    overrides = option_overrides(overrides, device=device, tensorboard=tensorboard, compile=compile,
                                 distributed=distributed)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run folder" if run_dir.is_file() else "does not exist"
        raise FileFormatError(f"run folder {str(run_dir)!r} {what}")
    worker = int(os.environ.get("RANK", "0") or 0) != 0  # torchrun: rank 0 writes, and locks
    with contextlib.nullcontext() if worker else files.RunLock(run_dir, "nnfin resume"):
        return _resume(run_dir, epochs, iterations, overrides, callbacks, progress, console,
                       data=data, model=model)


def _user_model_class(run_dir: Path) -> str | None:
    """The class of a run's own network (``model.json`` of kind ``user``), else ``None``."""
    try:
        spec = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
        model = spec.get("model", {}) if isinstance(spec, dict) else {}
    except (OSError, ValueError):
        return None
    return str(model.get("class")) if isinstance(model, dict) and model.get("kind") == USER_KIND else None


def _resume(run_dir: Path, epochs: int | None, iterations: int | None, overrides: Sequence[str],
            callbacks: Sequence[Callback], progress: bool, console: Any, *, data: Any = None,
            model: nn.Module | None = None) -> Run:
    state, _, notes = find_checkpoint(run_dir)
    for note in notes:
        warnings.warn(note, ResumeWarning, stacklevel=3)
    cfg = _merge(validate(state["config"]), overrides)
    if epochs is not None or iterations is not None:
        raw = cfg.to_dict()
        if epochs is not None:
            raw["train"].pop("iterations", None)
            raw["train"]["epochs"] = epochs
        if iterations is not None:
            raw["train"]["iterations"] = iterations
        cfg = validate(raw)
    in_memory = cfg.data.kind == "file" and not cfg.data.path
    if in_memory and data is None:
        raise DataError(f"run {str(run_dir)!r} was trained on in-memory data; resume needs them "
                        "again: nnfin.resume(run_dir, data=...) with the same samples")
    if data is not None and not in_memory:
        raise DataError(f"data= is for runs trained on in-memory data; run {str(run_dir)!r} reads "
                        f"[data] kind = {cfg.data.kind!r}" + (f", path = {cfg.data.path!r}"
                                                               if cfg.data.path else ""))
    user = _user_model_class(run_dir)
    if user is not None and model is None:
        raise ConfigError(f"run {str(run_dir)!r} trained a network of your own (class {user!r}); "
                          "resume needs it: nnfin.resume(run_dir, model=YourNet(...))")
    frame = None
    if data is not None:
        from nnfin.data.samples import memory_frame

        frame = memory_frame(data, features=cfg.data.features, target=cfg.data.target)[0]
    trainer, out_dir = build_trainer(cfg, write=True, run_dir=run_dir, callbacks=callbacks,
                                     progress=progress, console=console, frame=frame,
                                     model=model)  # None off rank 0
    if trainer.data.digest != state["data_sha256"]:
        source = "in-memory data" if in_memory else f"[data] path = {cfg.data.path!r}" \
            if cfg.data.kind == "file" else f"[data] kind = {cfg.data.kind!r}"
        raise DataError(f"the data differ from those the run in {str(run_dir)!r} was trained on "
                        f"({source}: sha256 {trainer.data.digest[:12]}... != "
                        f"{state['data_sha256'][:12]}...); resume needs the same data")
    trainer.load_state_dict(state)
    done = trainer.state.epoch >= trainer.max_epochs or trainer.state.step >= trainer.max_steps
    ended = done or (trainer.state.status == "early-stopped" and epochs is None and iterations is None)
    if ended and not _folder_complete(run_dir, trainer.state.step):
        # killed after the final checkpoint but before the run folder was written: finish it
        trainer.notify("on_train_end")
        return finish_run(trainer, out_dir)
    if ended:
        raise ConfigError(f"run {str(run_dir)!r} already ended ({trainer.state.status} after "
                          f"{trainer.state.epoch} epochs, {trainer.state.step} steps); "
                          "pass --epochs N with a larger N to train further")
    trainer.fit()
    return finish_run(trainer, out_dir)
