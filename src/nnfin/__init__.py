"""nnfin: neural-network function approximators with PyTorch, from the lecture to finance.

>>> import nnfin
>>> run = nnfin.fit(overrides=["train.epochs=20"])  # doctest: +SKIP
>>> run.predict([[0.0], [3.14]])  # doctest: +SKIP
"""

__version__ = "0.1.0"

from nnfin.api import fit
from nnfin.config import Config, load_config
from nnfin.resume import resume
from nnfin.runs import Run, load_run
from nnfin.saving import load, save
from nnfin.tune.cv import cross_validate as cv

__all__ = ["Config", "Run", "__version__", "cv", "fit", "load", "load_config", "load_run", "resume",
           "save"]
