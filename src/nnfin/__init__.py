"""nnfin: neural-network function approximators with PyTorch, from the lecture to finance.

>>> import nnfin
>>> run = nnfin.fit(overrides=["train.epochs=20"])  # doctest: +SKIP
>>> run.predict([[0.0], [3.14]])  # doctest: +SKIP

The names below are imported when first used, so ``import nnfin`` (and the command line's
start-up) does not pay for torch, pandas or optuna until they are needed.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from nnfin.version import __version__

# OpenMP threads that finish their share of an operation sleep instead of spinning for the
# next one. With spinning (the default) every small tensor operation on a machine whose cores
# other processes also use waits for threads that are not running: 4-10x slower on 2 busy
# cores (benchmarks/threads.py). Read once, when torch loads its OpenMP library: set here only
# if torch is not loaded yet and the user has not chosen (OMP_WAIT_POLICY=ACTIVE keeps spinning).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_API = {
    "fit": ("nnfin.app.fit", "fit"),
    "resume": ("nnfin.app.resume", "resume"),
    "cv": ("nnfin.app.cv", "cross_validate"),
    "tune": ("nnfin.app.tune", "tune"),
    "lr_find": ("nnfin.app.lr_find", "lr_find"),
    "predict": ("nnfin.app.predict", "predict"),
    "export": ("nnfin.app.export", "export"),
    "calibrate": ("nnfin.app.calibrate", "calibrate"),
    "runs": ("nnfin.app.runs_table", "runs"),
    "Config": ("nnfin.config", "Config"),
    "load_config": ("nnfin.config", "load_config"),
    "Run": ("nnfin.runs", "Run"),
    "load_run": ("nnfin.runs", "load_run"),
    "load": ("nnfin.saving", "load"),
    "save": ("nnfin.saving", "save"),
}

__all__ = ["Config", "Run", "__version__", "calibrate", "cv", "export", "fit", "load", "load_config",
           "load_run", "lr_find", "predict", "resume", "runs", "save", "tune"]

if TYPE_CHECKING:
    from nnfin.app.calibrate import calibrate
    from nnfin.app.cv import cross_validate as cv
    from nnfin.app.export import export
    from nnfin.app.fit import fit
    from nnfin.app.lr_find import lr_find
    from nnfin.app.predict import predict
    from nnfin.app.resume import resume
    from nnfin.app.runs_table import runs
    from nnfin.app.tune import tune
    from nnfin.config import Config, load_config
    from nnfin.runs import Run, load_run
    from nnfin.saving import load, save


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as ``nnfin.errors``) on first use."""
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


class _Package(types.ModuleType):
    """``nnfin.tune`` and ``nnfin.runs`` are the functions even once the modules of those names
    are imported (an import binds a submodule to its package's attribute; the module stays in
    ``sys.modules``, so ``from nnfin.runs import load_run`` works as ever)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
