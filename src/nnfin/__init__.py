"""nnfin: neural-network function approximators with PyTorch, from the lecture to finance.

>>> import nnfin
>>> run = nnfin.fit(overrides=["train.epochs=20"])  # doctest: +SKIP
>>> run.predict([[0.0], [3.14]])  # doctest: +SKIP

The names below are imported when first used, so ``import nnfin`` (and the command line's
start-up) does not pay for torch, pandas or optuna until they are needed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "fit": ("nnfin.api", "fit"),
    "Config": ("nnfin.config", "Config"),
    "load_config": ("nnfin.config", "load_config"),
    "resume": ("nnfin.resume", "resume"),
    "Run": ("nnfin.runs", "Run"),
    "load_run": ("nnfin.runs", "load_run"),
    "load": ("nnfin.saving", "load"),
    "save": ("nnfin.saving", "save"),
    "cv": ("nnfin.tune.cv", "cross_validate"),
}

__all__ = ["Config", "Run", "__version__", "cv", "fit", "load", "load_config", "load_run", "resume",
           "save"]

if TYPE_CHECKING:
    from nnfin.api import fit
    from nnfin.config import Config, load_config
    from nnfin.resume import resume
    from nnfin.runs import Run, load_run
    from nnfin.saving import load, save
    from nnfin.tune.cv import cross_validate as cv


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
    """``nnfin.resume`` is the function even once the module ``nnfin.resume`` is imported (an
    import binds a submodule to its package's attribute; the module stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
