"""Hyperparameter tuning: K-fold cross-validation and Optuna-driven grid/random/Bayesian search.

>>> from nnfin.tune import cross_validate, tune  # doctest: +SKIP
>>> cross_validate(overrides=["train.epochs=20"], folds=3).mean  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["cross_validate", "tune"]


def __getattr__(name: str) -> Any:  # lazy: loading a config imports nnfin.tune.space only
    if name == "cross_validate":
        from nnfin.tune.cv import cross_validate

        return cross_validate
    if name == "tune":
        from nnfin.tune.search import tune

        return tune
    raise AttributeError(f"module 'nnfin.tune' has no attribute {name!r}")
