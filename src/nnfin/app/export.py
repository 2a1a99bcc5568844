"""A trained model as one file that runs outside nnfin: ``nnfin.export(run, out)``
(``nnfin export RUN -o model.onnx`` on the command line).

The file computes what :func:`nnfin.predict` computes, the data scaling folded in: it takes
data-unit inputs and returns data-unit outputs.

* ``.onnx`` - ONNX (``torch.onnx``, via ``torch.export``), for ONNX Runtime in C++, C#, Java,
  Python or JavaScript. One input per feature, named as in ``model.json`` (``moneyness``,
  ``tau``, ...), in its order, each a float32 vector of shape ``[batch]`` (any length), and one
  float32 output of shape ``[batch]`` per target, named after the target (``price``). The
  columns of a table go in as they are; there is no matrix to assemble. The feature and target
  names are also in the file's metadata (``nnfin.features``, ``nnfin.targets``, JSON lists).
* ``.pt2`` - a ``torch.export`` program, for users who stay in PyTorch:
  ``torch.export.load(path).module()(moneyness, tau, ...)`` takes the same float32 vectors
  and returns a tuple of them, differentiable.

Inside the file the scaling runs in float64, the network in its training dtype (float32 or
float64), as :meth:`nnfin.runs.Run.predict` does. ``check=True`` (``--check``) runs the
written file (ONNX Runtime, or ``torch.export.load``) on sample inputs spread over the
training range and refuses it - nothing is left at ``path`` - when any output differs from
nnfin's own prediction by more than :data:`RTOL` relative (:func:`relative_error`).

>>> import nnfin
>>> nnfin.export("runs/bs", "bs.onnx", check=True).max_rel_error  # doctest: +SKIP
1.9e-07
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import io
import json
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnfin import files
from nnfin.errors import ExportError, FileFormatError, NNFinError, RunFolderBusy
from nnfin.io import SPEC, USER_KIND, read_spec
from nnfin.runs import Run
from nnfin.version import __version__

SUFFIXES = (".onnx", ".pt2")
RTOL = 1e-5  # the largest relative error --check accepts (see relative_error)
CHECK_ROWS = 1024
CHECK_BATCHES = (1, 7, CHECK_ROWS)  # batch sizes the check runs, on the first rows of the sample
INSTALL_HINT = "pip install 'nnfin[onnx]'"
BATCH = "batch"  # the name of the inputs' and outputs' one dimension


@dataclass
class Exported:
    """What :func:`export` wrote: the file, its format and signature, its size, the time the
    export took, and (with ``check``) the largest relative error against ``nnfin predict``."""

    path: Path
    format: str  # "onnx" or "pt2"
    inputs: list[str]
    outputs: list[str]
    bytes: int
    seconds: float
    opset: int | None = None
    max_rel_error: float | None = None
    rows_checked: int = 0


def export(run: str | Path | Run, out: str | Path, *, force: bool = False,
           check: bool = False) -> Exported:
    """Write ``run`` (a run folder, a model folder or its ``model.json`` / ``model.safetensors``,
    or a :class:`~nnfin.runs.Run`) to ``out``: ``.onnx`` or ``.pt2`` (by the suffix).

    An existing ``out`` needs ``force``; the file is written beside it and renamed into place,
    so a failed export (or a failed ``check``) leaves nothing behind.

    >>> done = export("runs/bs", "bs.onnx", check=True)  # doctest: +SKIP
    >>> done.inputs, done.outputs, done.max_rel_error  # doctest: +SKIP
    (['moneyness', 'tau', 'r', 'sigma'], ['price'], 1.9e-07)
    """
    _check_arguments(run, out, force=force, check=check)
    out = files.check_target(out, force=force, field="--out", suffixes=SUFFIXES)
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "onnx":
        require("onnx", "onnxscript", *(("onnxruntime",) if check else ()),
                what="--check" if check else "ONNX export")
    model_run = run if isinstance(run, Run) else open_for_export(run)
    where = str(model_run.dir) if model_run.dir is not None else "the run"
    _check_names(model_run, where)
    start = time.perf_counter()
    with _quiet():
        program = trace(model_run, where)
        opset = None
        if fmt == "onnx":
            proto = to_onnx(program, model_run, where)
            opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        result = Exported(out, fmt, list(model_run.features), list(model_run.targets), 0, 0.0, opset)
        with files.replacing(out, force=force, field="--out") as tmp:
            if fmt == "onnx":
                import onnx

                try:
                    onnx.save_model(proto, str(tmp))
                except ValueError as exc:  # protobuf's 2 GiB limit of one file
                    raise ExportError(f"{where}: the ONNX file cannot be written: {_why(exc)}; a "
                                      ".pt2 file has no such limit") from None
            else:
                torch.export.save(program, str(tmp))
            result.seconds = time.perf_counter() - start
            result.bytes = tmp.stat().st_size
            if check:
                result.max_rel_error = check_file(tmp, fmt, model_run, out)
                result.rows_checked = CHECK_ROWS
    return result


def _check_arguments(run: object, out: object, *, force: object, check: object) -> None:
    """Refuse, in one line naming the argument, what :func:`export` cannot take: a run that is
    no path and no :class:`Run` (a bare network has no names and no scaling), an output that is
    no path, and ``force`` / ``check`` that are not ``True`` or ``False`` (a string such as
    ``"false"`` would otherwise count as true and replace a file)."""
    if isinstance(run, nn.Module):
        raise ExportError(f"run = {type(run).__name__} module: export needs the feature and target "
                          "names and the data scaling of a run; save the network with its run "
                          "(nnfin.fit(..., model=net)) and pass nnfin.load_run(folder, model=net)")
    if not isinstance(run, str | Path | Run):
        raise ExportError(f"run = {run!r}: give a run folder, a model file (model.json / "
                          "model.safetensors) or a Run (nnfin.load_run(folder))")
    if not isinstance(out, str | Path):
        raise ExportError(f"out = {out!r}: give the output file's path (.onnx or .pt2)")
    for name, value in (("force", force), ("check", check)):
        if not isinstance(value, bool):
            raise ExportError(f"{name} = {value!r} must be True or False")


def require(*packages: str, what: str) -> None:
    """Refuse, in one line naming the pip command, when a package is not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)} (not installed); install with: "
                          f"{INSTALL_HINT}")


def open_for_export(path: str | Path) -> Run:
    """The :class:`Run` of a run folder, a model folder, or its ``model.json`` /
    ``model.safetensors`` (what ``nnfin predict`` opens, less pickled torch files)."""
    from nnfin.app.predict import open_model

    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"run folder or model file {str(p)!r} does not exist")
    if p.is_file() and p.suffix.lower() not in (".json", ".safetensors"):
        raise FileFormatError(f"{str(p)!r} is not a run folder or an nnfin model file ({SPEC} or "
                              "model.safetensors): export needs the feature and target names and "
                              "the data scaling those hold")
    folder = p if p.is_dir() else p.parent
    if (folder / "config.toml").is_file() and not (folder / SPEC).is_file():
        holder = files.lock_holder(folder)
        if holder is not None:  # a fit writes the model at its end
            raise RunFolderBusy(f"run {str(folder)!r} has no saved model yet: it is being trained "
                                  f"by {holder}; export it once that finishes")
    spec_path = p / SPEC if p.is_dir() else p.with_name(SPEC)
    spec: dict[str, Any] = {}
    if spec_path.is_file():
        with contextlib.suppress(NNFinError):  # open_model names what is wrong with the file
            spec, _ = read_spec(spec_path)
    if spec.get("model", {}).get("kind") == USER_KIND:
        raise FileFormatError(
            f"{str(p)!r} holds a network of your own (class {spec['model'].get('class')!r}), "
            "which nnfin cannot rebuild; export it from Python: "
            "nnfin.export(nnfin.load_run(folder, model=YourNet(...)), out)")
    return open_model(p)


def _check_names(run: Run, where: str) -> None:
    if not run.features or not run.targets:
        raise FileFormatError(f"{where} has no feature or target names; export a run folder or a "
                              "folder written by nnfin.save")
    both = next((t for t in run.targets if t in run.features), None)
    if both is not None:
        raise FileFormatError(f"{where}: {both!r} is both a feature and a target; the file names "
                              "each input and output once")


class DataUnits(nn.Module):
    """``network`` between the data scaling: one float32 vector per feature in, one per target
    out, all in the data's units (the scaling in float64, the network in ``dtype``)."""

    def __init__(self, network: nn.Module, scaler: Any, n_targets: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.network, self.n_targets, self.dtype = network, n_targets, dtype
        self.scaled = scaler is not None
        if scaler is not None:
            for name in ("x_mean", "x_std", "y_mean", "y_std"):
                self.register_buffer(name, getattr(scaler, name).detach().to("cpu", torch.float64)
                                     .clone())

    def forward(self, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.stack(columns, dim=1).to(torch.float64)
        if self.scaled:
            x = (x - self.x_mean) / self.x_std
        y = self.network(x.to(self.dtype)).to(torch.float64)
        if self.scaled:
            y = y * self.y_std + self.y_mean
        y = y.to(torch.float32)
        return tuple(y[:, j] for j in range(self.n_targets))


def data_units(run: Run) -> DataUnits:
    """A CPU copy of ``run.model`` in eval mode, wrapped in its data scaling (the run's model
    itself is left as it is)."""
    network = copy.deepcopy(run.model).to("cpu").eval()
    return DataUnits(network, run.scaler, len(run.targets), network_dtype(run.model)).eval()


def network_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a network computes in: its first floating-point parameter's (else float32)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return param.dtype if param is not None else torch.float32


def sample_inputs(run: Run, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` float32 inputs, uniform over each feature's mean +- 2 standard deviations (of
    the training data, stored with the scaling; [-2, 2] without scaling)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-2.0, 2.0, size=(rows, len(run.features)))
    if run.scaler is not None:
        u = run.scaler.x_mean.cpu().numpy() + u * run.scaler.x_std.cpu().numpy()
    return u.astype(np.float32)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress lines, warnings or log records from torch.export / torch.onnx."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def trace(run: Run, where: str = "the run") -> torch.export.ExportedProgram:
    """``torch.export`` of the run's network in data units, with a dynamic batch dimension."""
    example = tuple(torch.from_numpy(c) for c in sample_inputs(run, 4).T.copy())
    shapes = (tuple({0: torch.export.Dim(BATCH)} for _ in example),)
    try:
        with _quiet(), torch.no_grad():
            wrapper = data_units(run)
            return torch.export.export(wrapper, example, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # whatever torch.export meets in a network of one's own
        raise ExportError(f"{where}: the network ({_class_name(run.model)}) cannot be exported: "
                          f"{_why(exc)}") from None


def _class_name(model: nn.Module) -> str:
    cls = type(model)
    return cls.__qualname__ if cls.__module__.startswith("nnfin.") else f"{cls.__module__}.{cls.__qualname__}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _why(exc: BaseException) -> str:
    """One line on why torch.export or torch.onnx refused a network."""
    chain = _chain(exc)
    names = [type(e).__name__ for e in chain]
    text = " ".join(str(e) for e in chain)
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if op:
        return (f"it calls {op.group(1)}, which has no ONNX translation (a .pt2 file keeps every "
                "torch operation)")
    if "ConstraintViolationError" in names:
        return "its forward fixes the number of rows (the file takes any batch size)"
    if "GuardOnDataDependentSymNode" in names:
        return ("its forward branches on tensor values (Python if/for/float() on a tensor), which "
                "a traced graph cannot hold; use torch.where")
    inner = chain[-1]
    line = next((s.strip() for s in str(inner).splitlines() if s.strip()), type(inner).__name__)
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return f"{type(inner).__name__}: {line[:240]}"


def _float64_decompositions() -> dict[Any, Any]:
    """ELU, softplus and GELU in operations ONNX Runtime runs in float64 (it has no float64
    kernels for Elu, Softplus and Erf; erf is evaluated in float32, ~1e-7 relative)."""
    aten = torch.ops.aten

    def elu(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0,
            input_scale: float = 1.0) -> torch.Tensor:
        return torch.where(x > 0, x * scale, (torch.exp(x * input_scale) - 1) * (alpha * scale))

    def softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
        return torch.where(x * beta > threshold, x, torch.log(1 + torch.exp(x * beta)) / beta)

    def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
            return 0.5 * x * (1 + torch.tanh(inner))
        return 0.5 * x * (1 + torch.erf((x / math.sqrt(2)).to(torch.float32)).to(x.dtype))

    return {aten.elu.default: elu, aten.softplus.default: softplus, aten.gelu.default: gelu}


def to_onnx(program: torch.export.ExportedProgram, run: Run, where: str = "the run") -> Any:
    """The ONNX ``ModelProto`` of a traced run: inputs and outputs named after the features
    and targets, the batch dimension named ``batch``, nnfin's names in the metadata."""
    try:
        with _quiet():
            if network_dtype(run.model) == torch.float64:
                program = program.run_decompositions(_float64_decompositions())
            onnx_program = torch.onnx.export(program, (), None, input_names=list(run.features),
                                             output_names=list(run.targets), dynamo=True,
                                             external_data=False, verbose=False)
    except Exception as exc:
        raise ExportError(f"{where}: the network ({_class_name(run.model)}) cannot be written as "
                          f"ONNX: {_why(exc)}") from None
    proto = onnx_program.model_proto
    graph = proto.graph
    symbols = {d.dim_param for v in [*graph.input, *graph.output]
               for d in v.type.tensor_type.shape.dim[:1] if d.dim_param}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH
    meta = {"nnfin.features": json.dumps(run.features), "nnfin.targets": json.dumps(run.targets),
            "nnfin.version": __version__, "nnfin.units": "data units; scaling folded in"}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"nnfin model: inputs {', '.join(run.features)} -> outputs "
                        f"{', '.join(run.targets)}; one float32 vector [batch] each, data units")
    return proto


def relative_error(got: np.ndarray, expected: np.ndarray, rms: np.ndarray | None = None) -> float:
    """The largest ``|got - expected| / max(|expected|, rms)`` over all rows and targets, where
    ``rms`` is the root mean square of each target's expected values (over ``expected``, unless
    given): relative where outputs are of their usual size, relative to that size near zero
    (where a float32 network's own rounding, ~1e-7 of the output's scale, is all that differs).

    >>> relative_error(np.array([[1.0], [2.00002]]), np.array([[1.0], [2.0]]))
    1e-05
    """
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if rms is None:
        rms = np.sqrt(np.mean(expected**2, axis=0))
    floor = np.maximum(np.abs(expected), np.where(rms > 0, rms, np.finfo(np.float64).tiny))
    return round(float(np.max(np.abs(got - expected) / floor)), 12)


def run_file(path: Path, fmt: str, x: np.ndarray, features: list[str], targets: list[str]
             ) -> np.ndarray:
    """Outputs of an exported file for inputs ``x`` (n, n_features): (n, n_targets)."""
    columns = [np.ascontiguousarray(x[:, j], dtype=np.float32) for j in range(x.shape[1])]
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outs = session.run(targets, dict(zip(features, columns, strict=True)))
    else:
        with _quiet():
            module = torch.export.load(str(path)).module()
        with torch.no_grad():
            outs = [o.numpy() for o in module(*(torch.from_numpy(c) for c in columns))]
    return np.stack([np.asarray(o, np.float64).reshape(len(x)) for o in outs], axis=1)


def check_file(path: Path, fmt: str, run: Run, target: Path | None = None) -> float:
    """Run the written file on :data:`CHECK_ROWS` sample rows, in batches of
    :data:`CHECK_BATCHES`, against nnfin's own prediction; refuse an error above :data:`RTOL`.
    Returns the largest relative error."""
    x = sample_inputs(run, CHECK_ROWS)
    if run.device.type != "cpu":  # the reference on the CPU, where nnfin predict runs
        run = dataclasses.replace(run, model=copy.deepcopy(run.model).to("cpu"))
    expected = run.predict(x.astype(np.float64))
    rms = np.sqrt(np.mean(expected**2, axis=0))
    shown = str(target or path)
    runner = "ONNX Runtime" if fmt == "onnx" else "torch.export.load"
    worst = 0.0
    for n in CHECK_BATCHES:
        try:
            got = run_file(path, fmt, x[:n], run.features, run.targets)
        except Exception as exc:  # a runtime without a kernel for an operation of the network
            raise ExportError(f"--check: {runner} cannot run {shown!r}: {_why(exc)}; nothing was "
                              "written") from None
        error = relative_error(got, expected[:n], rms) if np.isfinite(got).all() else math.inf
        worst = max(worst, error)
        if error > RTOL:
            raise ExportError(f"--check: {shown!r} run by {runner} differs from nnfin predict by "
                              f"{error:.2g} relative (limit {RTOL:g}) on a batch of {n} rows; "
                              "nothing was written")
    return worst
