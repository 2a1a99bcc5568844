"""``nnfin export RUN -o model.onnx``: a trained model as one file that runs outside nnfin.

RUN is a run folder, a model folder written by ``nnfin.save``, or its ``model.json`` /
``model.safetensors``. The file takes the features in the data's units and returns the targets
in the data's units (the data scaling is folded in):

* ``.onnx``: one float32 input of shape ``[batch]`` per feature, named after it, and one
  float32 output of shape ``[batch]`` per target, named after it; for ONNX Runtime in C++, C#,
  Java, Python or JavaScript.
* ``.pt2``: a ``torch.export`` program with the same signature, for PyTorch
  (``torch.export.load(path).module()``).

``--check`` runs the written file (ONNX Runtime, or torch) on sample inputs over the training
range and refuses it when it differs from ``nnfin predict`` by more than 1e-5 relative; nothing
is then left at OUT. An existing OUT is kept unless ``--force`` is given.

    nnfin export runs/bs -o bs.onnx --check
    nnfin export runs/bs -o bs.pt2
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(highlight=False, soft_wrap=True, markup=False)  # paths on one line, [batch] as is


def export(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder, model folder, or its "
                                   "model.json / model.safetensors."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .onnx (ONNX) or .pt2 "
                             "(torch.export)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
    check: bool = typer.Option(False, "--check", help="Run the file (ONNX Runtime / torch) on "
                               "sample inputs and refuse it unless it matches nnfin predict to "
                               "1e-5 relative."),
) -> None:
    """Export a trained model to ONNX (or torch.export), the data scaling folded in."""
    from nnfin.app.export import export as export_model

    done = export_model(run_dir, out, force=force, check=check)
    kind = f"ONNX, opset {done.opset}" if done.format == "onnx" else "torch.export program"
    console.print(f"wrote {out} ({kind}, {done.bytes / 1024:.1f} KiB) in {done.seconds:.2f} s")
    console.print(f"inputs:  {', '.join(done.inputs)} (float32, shape [batch] each, data units)")
    console.print(f"outputs: {', '.join(done.outputs)} (float32, shape [batch] each, data units)")
    if done.max_rel_error is not None:
        runner = "ONNX Runtime" if done.format == "onnx" else "torch"
        console.print(f"checked: {runner} vs nnfin predict on {done.rows_checked} sample rows "
                      f"(batches of 1, 7 and {done.rows_checked}): max relative error "
                      f"{done.max_rel_error:.1e} (limit 1e-05)")
