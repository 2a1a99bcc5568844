"""Calibrate a model through a trained surrogate: ``nnfin.calibrate(run, quotes)``
(``nnfin calibrate RUN QUOTES -o FITTED.csv`` on the command line).

``run`` is a run folder (or a :class:`~nnfin.runs.Run`) of a price or implied-vol surrogate;
``quotes`` a CSV or Parquet file (or a DataFrame) holding the surrogate's market inputs (for the
Heston recipe ``moneyness``, ``tau``, ``r``), the target column as named in ``model.json``
(``price`` or ``iv``) and optionally ``surface`` (many surfaces in one file). The run's inputs
missing from the quotes are the parameters (Heston: ``rho``, ``kappa``, ``vbar``, ``gamma``,
``v0``); they stay inside the ranges the surrogate was trained on: the generator's box for
nnfin's finance kinds, else ``input_ranges`` in ``model.json``. The math is
:func:`nnfin.finance.calibrate`; this function adds the files: it opens the run and the quotes
and writes FITTED (one row per surface) through :mod:`nnfin.files`, refusing an existing file
unless ``force``.

>>> import nnfin
>>> cal = nnfin.calibrate("runs/heston", "examples/finance/heston_quotes.csv",
...                       out="fitted.csv", polish=True)  # doctest: +SKIP
>>> cal.fitted  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nnfin import files
from nnfin.data.files import read_frame
from nnfin.finance.calibration import DEFAULTS, Calibration
from nnfin.finance.calibration import calibrate as calibrate_frame
from nnfin.io import read_spec
from nnfin.runs import Run


def stored_ranges(run: Run) -> dict[str, tuple[float, float]] | None:
    """``input_ranges`` of the run's ``model.json`` (written by ``nnfin fit``), if any."""
    if run.dir is None or not (Path(run.dir) / "model.json").is_file():
        return None
    spec, _ = read_spec(run.dir)
    ranges = spec.get("input_ranges")
    if not isinstance(ranges, dict):
        return None
    try:
        return {str(k): (float(v[0]), float(v[1])) for k, v in ranges.items()}
    except (TypeError, ValueError, IndexError):
        return None


def calibrate(run: str | Path | Run, quotes: str | Path | pd.DataFrame, *,
              out: str | Path | None = None, force: bool = False, polish: bool = False,
              method: str = DEFAULTS["method"], iterations: int = DEFAULTS["iterations"],
              coarse: int = DEFAULTS["coarse"], candidates: int = DEFAULTS["candidates"],
              starts: int = DEFAULTS["starts"],
              adam_steps: int = DEFAULTS["adam_steps"], adam_lr: float = DEFAULTS["adam_lr"],
              lbfgs_steps: int = DEFAULTS["lbfgs_steps"], seed: int = DEFAULTS["seed"],
              polish_evaluations: int = 100) -> Calibration:
    """Calibrate the surrogate's parameters to every surface of ``quotes`` (see the module doc);
    ``out`` (.csv or .parquet) receives ``.fitted``. ``polish`` refines each surface with the
    exact pricer of the run's kind (Heston: COS) by ``scipy.optimize.least_squares``.

    >>> cal = calibrate("runs/heston", "quotes.csv", out="fitted.csv")  # doctest: +SKIP
    >>> cal.fitted.columns.tolist()[:6]  # doctest: +SKIP
    ['surface', 'rho', 'kappa', 'vbar', 'gamma', 'v0']
    """
    from nnfin.app.predict import open_model
    from nnfin.finance.calibration import check_surrogate, training_ranges

    if out is not None:  # refused before the run and the quotes are read
        files.check_target(out, force=force, field="--out", suffixes=files.FRAME_SUFFIXES)
    opened = run if isinstance(run, Run) else open_model(run)
    check_surrogate(opened)
    frame = quotes if isinstance(quotes, pd.DataFrame) else read_frame(quotes, field="QUOTES")
    ranges = training_ranges(opened, stored_ranges(opened))
    result = calibrate_frame(opened, frame, polish=polish, ranges=ranges, method=method,
                             iterations=iterations, coarse=coarse, candidates=candidates,
                             starts=starts, adam_steps=adam_steps, adam_lr=adam_lr,
                             lbfgs_steps=lbfgs_steps, seed=seed,
                             polish_evaluations=polish_evaluations)
    if out is not None:
        files.write_frame(out, result.fitted, force=force, field="--out")
    return result


def summary(result: Calibration) -> dict[str, Any]:
    """The numbers the command prints: surfaces, RMSE median and max, times."""
    fitted = result.fitted
    out: dict[str, Any] = {"surfaces": len(fitted), "parameters": result.parameters,
                           "time_s": result.time_s}
    network_rmse = fitted["network_rmse"] if "network_rmse" in fitted else fitted["rmse"]
    out["network_rmse_median"] = float(network_rmse.median())
    out["network_rmse_max"] = float(network_rmse.max())
    if result.polish_time_s is not None:
        out["polish_time_s"] = result.polish_time_s
        out["rmse_median"] = float(fitted["rmse"].median())
        out["rmse_max"] = float(fitted["rmse"].max())
        out["network_rmse_exact_median"] = float(fitted["network_rmse_exact"].median())
    return out
