"""The Python API: ``nnfin.fit`` runs config -> data -> model -> loop -> run folder.

>>> import nnfin
>>> run = nnfin.fit(overrides=["train.epochs=5", "run.dir=/tmp/nnfin-doc"])  # doctest: +SKIP
>>> run.metrics["test"]["r2"]  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nnfin import distributed, files
from nnfin.config import Config, load_config
from nnfin.data import Data, build_data
from nnfin.data.finance_bridge import FINANCE_KINDS
from nnfin.device import resolve_device
from nnfin.errors import ConfigError, DataError, NNFinError
from nnfin.io import USER_KIND, save_model, versions
from nnfin.metrics import regression_metrics
from nnfin.models import Polynomial, build_model
from nnfin.models.polynomial import least_squares
from nnfin.runs import Run, abandon_run_dir, clear_run, create_run_dir, write_config
from nnfin.train.callbacks import Callback, EarlyStopping, ProgressBar
from nnfin.train.loop import Trainer, seed_everything


def fit(config: Config | dict | str | Path | None = None, *, overrides: str | Sequence[str] = (),
        run_dir: str | Path | None = None, device: str | None = None, force: bool = False,
        tensorboard: bool = False, compile: bool = False, distributed: bool = False,
        data: Any = None, features: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None, model: torch.nn.Module | None = None,
        callbacks: Sequence[Callback] = (), progress: bool = False, write: bool = True,
        console: Any = None) -> Run:
    """Train the model a config describes and (by default) write its run folder.

    ``config`` is a :class:`Config`, a dict of sections, a TOML path, or ``None`` for the
    lecture's default (``mlp`` 1-6-6-1 sigmoid on cos(x) with Adam). ``overrides`` are
    ``"section.key=value"`` strings (one or a list), as ``--set`` on the command line; the
    other keywords are the command line's options (``run_dir`` is ``-o/--run-dir``).

    ``force=True`` writes the new run into ``run_dir`` when it holds a previous ``nnfin fit``
    run (its ``config.toml`` and ``metrics.json``), replacing nnfin's own files there; any
    other non-empty folder is refused, with or without ``force``.

    ``data`` trains on in-memory samples instead of ``[data]``'s source: a DataFrame (columns
    picked by ``features``/``target`` or ``[data] features``/``target``) or a pair ``(X, y)``
    of arrays (columns named by ``features``, default ``x1, x2, ...``, and ``target``, default
    ``y``); they are split, scaled and hashed as a file's are. ``model`` trains your own
    ``torch.nn.Module`` (inputs ``(n, n_features)``, outputs ``(n, n_targets)``) in the same
    loop, run folder and checkpoints; reopen it with ``nnfin.load_run(dir, model=MyNet())``.

    >>> run = fit(data=(x, y), model=MyNet(), overrides="train.epochs=50")  # doctest: +SKIP
    """
    cfg, frame = prepare(config, option_overrides(
        overrides, run_dir=run_dir, device=device, tensorboard=tensorboard, compile=compile,
        distributed=distributed), data=data, features=features, target=target)
    trainer, out_dir = build_trainer(cfg, write=write, callbacks=callbacks, progress=progress,
                                     console=console, frame=frame, model=model, force=force)
    try:
        trainer.fit()
        return finish_run(trainer, out_dir)
    finally:
        release_run_dir(out_dir)


def as_list(overrides: str | Sequence[str] | None) -> list[str]:
    """``overrides`` as a list: one ``"section.key=value"`` string or several.

    >>> as_list("train.epochs=5")
    ['train.epochs=5']
    """
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides = {overrides!r} must be a \"section.key=value\" string or a list "
                          "of them")
    return list(overrides)


# keyword (= command-line option) -> config key; the strings are quoted as TOML
_OPTION_KEYS = {"run_dir": "run.dir", "device": "train.device", "tensorboard": "train.tensorboard",
                "compile": "train.compile", "distributed": "train.distributed",
                "folds": "tune.folds", "trials": "tune.trials", "storage": "tune.storage",
                "study": "tune.study", "strategy": "tune.strategy"}
_QUOTED = {"storage", "study", "strategy"}


def option_overrides(overrides: str | Sequence[str] | None = (), **options: Any) -> list[str]:
    """``overrides`` followed by the overrides the command line's options stand for (unset
    options - ``None`` or ``False`` - add none); the options come last, so they win.

    >>> option_overrides("optim.lr=0.01", device="cpu", compile=True, trials=None)
    ['optim.lr=0.01', 'train.device=cpu', 'train.compile=true']
    """
    out = as_list(overrides)
    for name, value in options.items():
        if value is None or value is False:
            continue
        key = _OPTION_KEYS[name]
        if value is True:
            out.append(f"{key}=true")
        elif name in _QUOTED:
            out.append(f'{key}="{value}"')
        else:
            out.append(f"{key}={value}")
    return out


def prepare(config: Config | dict | str | Path | None, overrides: Sequence[str], *, data: Any = None,
            features: str | Sequence[str] | None = None, target: str | Sequence[str] | None = None
            ) -> tuple[Config, Any]:
    """The config and, for in-memory ``data``, its table (``None`` otherwise).

    In-memory data make ``[data]`` a ``kind = "file"`` table without a path whose
    ``features``/``target`` name the columns.

    >>> cfg, frame = prepare(None, [], data=(np.zeros((8, 2)), np.zeros(8)))  # doctest: +SKIP
    >>> cfg.data.features, list(frame.columns)  # doctest: +SKIP
    (['x1', 'x2'], ['x1', 'x2', 'y'])
    """
    cfg = load_config(config, as_list(overrides))
    if data is None:
        if features is not None or target is not None:
            raise ConfigError("features=/target= name the columns of in-memory data=; for a file "
                              "set [data] features/target")
        return cfg, None
    from nnfin.data.samples import memory_frame

    frame, feats, targs = memory_frame(data, features=features or cfg.data.features,
                                       target=target or cfg.data.target)
    raw = cfg.to_dict()
    raw["data"] = {**raw.get("data", {}), "kind": "file"}
    raw["data"].pop("path", None)
    for key, value in (("features", feats), ("target", targs)):
        if value is not None:
            raw["data"][key] = value
        else:
            raw["data"].pop(key, None)
    return load_config(raw), frame


_USER_MODELS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def user_model_spec(model: torch.nn.Module) -> dict[str, Any] | None:
    """``model.json``'s ``"model"`` entry for a network given as ``model=`` (``None`` for one
    nnfin built from ``[model]``)."""
    if model not in _USER_MODELS:
        return None
    cls = type(model)
    return {"kind": USER_KIND, "class": f"{cls.__module__}.{cls.__qualname__}"}


def build_trainer(cfg: Config, *, write: bool = True, run_dir: Path | None = None,
                  callbacks: Sequence[Callback] = (), progress: bool = False,
                  console: Any = None, frame: Any = None, model: torch.nn.Module | None = None,
                  force: bool = False) -> tuple[Trainer, Path | None]:
    """Seed, build data and model on the device, create the run folder and the callbacks.

    Used by :func:`fit` and by resume, so a resumed run is rebuilt exactly as it was built.
    ``frame`` holds in-memory samples; ``model`` is a network of the caller's own.
    """
    device = resolve_device(cfg.train.device, cfg.train.dtype)
    if cfg.train.distributed:
        device = distributed.setup(device)
        write = write and distributed.is_main()
        run_dir = run_dir if distributed.is_main() else None
        progress = progress and distributed.is_main()
    seed_everything(cfg.train.seed)
    data = build_data(cfg.data, device=device, dtype=cfg.train.dtype, frame=frame)
    torch.manual_seed(cfg.train.seed)  # initial weights depend on the seed only
    if model is None:
        model = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim)
    elif not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model = {type(model).__name__}: give a torch.nn.Module")
    else:
        _USER_MODELS.add(model)
    model = model.to(device=device, dtype=getattr(torch, cfg.train.dtype))
    if model in _USER_MODELS:
        check_user_model(model, data)
    new = write and run_dir is None
    made = previous = False
    if new:  # made and locked before anything is written; see release_run_dir
        run_dir, made = create_run_dir(cfg, force=force, kind="fit")
        previous = (run_dir / "config.toml").exists()  # a run that force will replace
        try:
            files.RunLock(run_dir, "nnfin fit").acquire()
        except NNFinError:  # another process writes there: its files stay as they are
            if not previous:
                abandon_run_dir(run_dir, made)
            raise
    try:
        trainer = Trainer(model, data, cfg, callbacks=_callbacks(cfg, data.digest, run_dir, progress,
                                                                 console, callbacks))
        if new:
            if previous:  # only once the new config is accepted: a refusal keeps the old run
                clear_run(run_dir)
            write_config(run_dir, cfg)
    except NNFinError:
        if new:  # a refused config leaves no run folder behind (a folder the user made stays)
            release_run_dir(run_dir)
            abandon_run_dir(run_dir, made, keep=previous)
        raise
    return trainer, run_dir


def check_user_model(model: torch.nn.Module, data: Data) -> None:
    """Refuse, in one line and before training, a network of one's own that cannot be trained on
    ``data``: no trainable parameters, a forward that fails on two training rows, or an output
    that is not an (n, n_targets) tensor (a (n,) output would broadcast against the targets and
    train to a wrong answer without an error)."""
    from nnfin.train.loop import capture_rng, restore_rng

    name = type(model).__name__
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model = {name} has no trainable parameters (none, or all with "
                          "requires_grad = False)")
    x = data.split("train")[0][:2]
    rng, training = capture_rng(), model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"model = {name} cannot take the {data.in_dim} input(s) "
                        f"{', '.join(data.features)} (a batch of shape {tuple(x.shape)}): "
                        f"{first}") from None
    finally:
        model.train(training)
        restore_rng(rng)
    if not torch.is_tensor(out):
        raise DataError(f"model = {name} returns a {type(out).__name__}; it must return one tensor "
                        f"of shape (n, {data.out_dim})")
    if tuple(out.shape) != (x.shape[0], data.out_dim):
        raise DataError(f"model = {name} returns shape {tuple(out.shape)} for {x.shape[0]} rows; it "
                        f"must return (n, {data.out_dim}) for the target(s) {', '.join(data.targets)}")


def release_run_dir(run_dir: Path | None) -> None:
    """Drop the lock :func:`build_trainer` took on the run folder it created (once the run
    folder is written, or training failed)."""
    if run_dir is not None:
        files.RunLock(run_dir).release()


def _callbacks(cfg: Config, digest: str, run_dir: Path | None, progress: bool, console: Any,
               extra: Sequence[Callback]) -> list[Callback]:

    cbs: list[Callback] = []
    if progress and cfg.train.progress:
        cbs.append(ProgressBar(console))
    if cfg.train.tensorboard and run_dir is not None:  # before early stopping: its on_train_end
        from nnfin.train.tensorboard import TensorBoardCallback  # runs after the best is restored

        cbs.append(TensorBoardCallback(run_dir / "tensorboard", every=cfg.train.tensorboard_every))
    es = EarlyStopping.from_config(cfg.early_stopping)
    if es is not None:
        cbs.append(es)
    if run_dir is not None:
        from nnfin.train.checkpoint import CheckpointCallback

        cbs.append(CheckpointCallback(run_dir / "checkpoints", cfg, digest,
                                      every=cfg.run.checkpoint_every))
    return [*cbs, *extra]


def finish_run(trainer: Trainer, run_dir: Path | None) -> Run:
    """Compute metrics and write the run folder for a trainer that has stopped."""
    cfg, data, model, state = trainer.cfg, trainer.data, trainer.model, trainer.state
    run = Run(cfg, model, data.scaler, data.features, data.targets,
              pd.DataFrame(state.history), {}, run_dir)
    diverged = state.status == "diverged"
    metrics: dict[str, Any] = {
        "status": state.status, "stop_reason": state.stop_reason,
        "epochs": state.epoch, "steps": state.step, "time_s": round(state.elapsed, 4),
        "device": str(trainer.device), "dtype": cfg.train.dtype,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        # history.csv's losses are the training loss on what the model sees; the split metrics
        # below are in the data's units
        "history_units": "standardized" if cfg.data.scale else "data",
        "restored_epoch": state.restored_epoch, "versions": versions(),
    }
    if not diverged:
        for split in ("train", "val", "test"):
            x, y = data.split(split, scaled=False)
            if len(x):
                metrics[split] = regression_metrics(y.double().cpu().numpy(), run.predict(x))
        if isinstance(model, Polynomial):
            metrics["polynomial"] = polynomial_report(model, data, cfg)
    run.metrics = metrics
    if run_dir is not None:
        write_run(run, trainer)
        if state.status in ("finished", "early-stopped") and cfg.data.kind in FINANCE_KINDS:
            from nnfin.app.report import write_report  # report/: metrics.csv, plots

            write_report(run, trainer)
    return run


@torch.no_grad()
def polynomial_report(model: Polynomial, data: Data, cfg: Config) -> dict[str, Any]:
    """The fitted polynomial next to the exact least-squares optimum on the training data."""
    x, y = data.split("train")
    coef, sse_opt = least_squares(x, y, model.degree)
    sse_fit = float(((model(x).double() - y.double()) ** 2).sum())
    return {
        "formula": model.formula(),
        "coefficients": model.coefficients.detach().double().cpu().tolist(),
        "lstsq_formula": _formula(coef.tolist()),
        "lstsq_coefficients": coef.tolist(),
        "sse": sse_fit, "lstsq_sse": sse_opt,
        "relative_gap": (sse_fit - sse_opt) / sse_opt if sse_opt > 0 else sse_fit,
        "units": "scaled" if cfg.data.scale else "data",
    }


def _formula(coef: list[float]) -> str:
    tmp = Polynomial(len(coef) - 1)
    tmp.coefficients.data = torch.tensor(coef)
    return tmp.formula()


def write_run(run: Run, trainer: Trainer) -> None:
    """config.toml, metrics.json, history.csv, weights + gradients and plots."""
    from safetensors.torch import save_file

    from nnfin import plots

    run_dir, cfg = run.dir, run.config
    assert run_dir is not None
    write_config(run_dir, cfg, force=True)
    files.write_frame(run_dir / "history.csv", run.history, force=True)
    if run.status != "diverged":
        x_train = trainer.data.x_train.double()
        ranges = {f: (float(x_train[:, j].min()), float(x_train[:, j].max()))
                  for j, f in enumerate(run.features)} if len(x_train) else None
        save_model(run_dir, run.model, user_model_spec(run.model) or cfg.model.model_dump(mode="json"),
                   features=run.features, targets=run.targets, scaler=run.scaler,
                   dtype=cfg.train.dtype, input_ranges=ranges)
        grads = final_gradients(trainer)
        files.write_with(run_dir / "gradients.safetensors", lambda tmp: save_file(grads, str(tmp)),
                         force=True)
    files.write_json(run_dir / "metrics.json", run.metrics, force=True)
    if cfg.run.plots:
        if len(run.history):
            units = "standardized units" if cfg.data.scale else "data units"
            plots.save(plots.loss_figure(run.history, title=run_dir.name, units=units),
                       run_dir / "plots/loss.png")
        if run.status != "diverged":
            data = trainer.data
            to_np = lambda t: t.double().cpu().numpy()  # noqa: E731
            fig = plots.fit_figure(to_np(data.x_train), to_np(data.y_train), run.predict,
                                   feature=run.features[0], target=run.targets[0],
                                   x_test=to_np(data.x_test), y_test=to_np(data.y_test))
            plots.save(fig, run_dir / "plots/fit.png")


def final_gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Gradients of the full-training-set objective at the final weights (for ``inspect``)."""
    model = trainer.model
    x, y = trainer.data.split("train")
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = trainer.loss_fn(model(x), y)
        if trainer.penalty is not None:
            loss = loss + trainer.penalty()
        loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
             .contiguous() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads
