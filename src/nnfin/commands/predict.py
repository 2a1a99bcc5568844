"""``nnfin predict RUN INPUT -o OUT``: apply a trained model to a CSV or Parquet file.

The input must hold the columns the model was trained on (``features`` in ``model.json``);
other columns are kept as they are. The saved data scaling is applied to the inputs and undone
on the outputs, so predictions are in the data's units. OUT holds every input column followed
by one prediction column per target, named ``<target>_pred`` (e.g. ``y_pred``, ``V_pred``).
OUT's suffix picks the format (.csv, or .parquet / .pq); an existing OUT is kept unless
``--force`` is given.

A whole pickled model (``torch.save(model, path)``) is read only with ``--trust``; it holds no
feature names and no data scaling, so its inputs are the columns named by ``--features`` (or
every numeric column, in order, when their number matches the model's input width), fed as they
are, and its outputs are named ``y_pred`` (``y1_pred``, ``y2_pred``, ... for several).

    nnfin predict runs/my-run grid.csv -o grid_pred.parquet
    nnfin predict model.pth grid.csv -o pred.csv --trust --features S,K
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)  # paths stay on one line


def predict(
    run_dir: Path = typer.Argument(..., help="Run folder (or model folder) to predict with."),
    input_: Path = typer.Argument(..., metavar="INPUT", help="CSV or Parquet file of inputs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .csv or .parquet."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling a torch file (runs its "
                               "code); run and model folders never need it."),
    features: str | None = typer.Option(None, "--features", help="Input columns of a whole "
                                        "model file (--trust), in order: a,b,c (default: every "
                                        "numeric column)."),
) -> None:
    """Predict with a trained model: writes the inputs plus <target>_pred columns to OUT."""
    from nnfin.app.predict import is_whole_model, predict_table

    result, run = predict_table(run_dir, input_, out=out, force=force, trust=trust, features=features)
    new = [c for c in result.columns if c.endswith("_pred") and c[:-5] in run.targets]
    console.print(f"predicted {len(result)} rows: {', '.join(new)} from {', '.join(run.features)} "
                  f"(model: {run_dir})")
    if is_whole_model(run):
        console.print("note: no data scaling applied: a whole model file holds none, so the "
                      "inputs were fed as they are and the outputs are the model's raw outputs")
    console.print(f"wrote {len(result)} rows x {len(result.columns)} columns to {out}")
