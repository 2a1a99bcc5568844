"""The defaults of :func:`nnfin.finance.calibrate` (and ``nnfin calibrate``), importable without
torch: the command line names them in its help before anything heavy is loaded.

>>> DEFAULTS["method"], METHODS
('lm', ('lm', 'adam-lbfgs'))
"""

from __future__ import annotations

DEFAULTS = {"method": "lm", "candidates": 32, "starts": 2, "iterations": 8, "coarse": 12,
            "adam_steps": 150, "adam_lr": 0.05, "lbfgs_steps": 60, "history_size": 20, "seed": 0,
            "threads": 1}
METHODS = ("lm", "adam-lbfgs")

__all__ = ["DEFAULTS", "METHODS"]
