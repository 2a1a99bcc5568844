"""A scikit-learn regressor on nnfin's models and its one training loop.

:class:`NNRegressor` stores its parameters in ``__init__`` and nothing else; ``fit`` turns
them into an nnfin :class:`~nnfin.config.Config`, scales with training statistics (as a run
does), trains with :class:`~nnfin.train.loop.Trainer` and keeps the fitted state in attributes
ending in ``_``. It works in ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``, can be
cloned and pickled, and passes scikit-learn's estimator checks.

Each parameter sets one config key and is named after it (``lr`` is ``[optim] lr``,
``schedule`` is ``[optim] schedule``). Three rules cover the rest:

* a key found in two of the sections the estimator sets is prefixed with its section and an
  underscore in both: ``optim_patience`` (``[optim] patience``, the plateau schedule) and
  ``early_stopping_patience`` (``[early_stopping] patience``);
* ``[optim] name`` is ``optimizer`` and ``[early_stopping] enabled`` is ``early_stopping``;
* every other key of ``[model]``, ``[optim]``, ``[penalty]``, ``[train]`` and
  ``[early_stopping]`` is reached by ``overrides``, a list of ``"section.key=value"``
  strings as ``nnfin fit --set`` takes them.

>>> import numpy as np
>>> x = np.linspace(-1.5, 4.5, 200).reshape(-1, 1)
>>> est = NNRegressor(neurons=(6, 6), epochs=50, seed=0).fit(x, np.cos(x).ravel())
>>> est.predict(x[:3]).shape, est.n_iter_
((3,), 50)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from nnfin.config import BUILTIN_TARGETS, Config, load_config, validate
from nnfin.data import data_from_indices
from nnfin.data.scaling import Standardizer
from nnfin.device import resolve_device
from nnfin.errors import ConfigError
from nnfin.models import build_model
from nnfin.train.callbacks import Callback, EarlyStopping, ProgressBar
from nnfin.train.loop import Trainer

__all__ = ["NNRegressor", "expected_failed_checks"]

# estimator parameter -> (config section, key): the one table that maps names and validates
_PARAMS: dict[str, tuple[str, str]] = {
    "kind": ("model", "kind"), "neurons": ("model", "neurons"), "degree": ("model", "degree"),
    "activation": ("model", "activation"), "init": ("model", "init"),
    "optimizer": ("optim", "name"), "lr": ("optim", "lr"), "momentum": ("optim", "momentum"),
    "nesterov": ("optim", "nesterov"), "betas": ("optim", "betas"), "eps": ("optim", "eps"),
    "weight_decay": ("optim", "weight_decay"), "history_size": ("optim", "history_size"),
    "max_iter": ("optim", "max_iter"), "line_search": ("optim", "line_search"),
    "schedule": ("optim", "schedule"), "step_size": ("optim", "step_size"),
    "gamma": ("optim", "gamma"), "min_lr": ("optim", "min_lr"), "max_lr": ("optim", "max_lr"),
    "factor": ("optim", "factor"), "optim_patience": ("optim", "patience"),
    "l1": ("penalty", "l1"), "l2": ("penalty", "l2"), "include_bias": ("penalty", "include_bias"),
    "epochs": ("train", "epochs"), "iterations": ("train", "iterations"),
    "batch_size": ("train", "batch_size"), "sampling": ("train", "sampling"),
    "loss": ("train", "loss"), "huber_delta": ("train", "huber_delta"),
    "device": ("train", "device"), "dtype": ("train", "dtype"), "seed": ("train", "seed"),
    "progress": ("train", "progress"), "scale": ("data", "scale"),
    "early_stopping": ("early_stopping", "enabled"), "monitor": ("early_stopping", "monitor"),
    "early_stopping_patience": ("early_stopping", "patience"),
    "min_delta": ("early_stopping", "min_delta"), "relative": ("early_stopping", "relative"),
    "start_from_epoch": ("early_stopping", "start_from_epoch"),
    "restore_best": ("early_stopping", "restore_best"),
}
# the sections ``overrides`` may set (the data are fit's X and y; a run folder is never written)
_OVERRIDE_SECTIONS = ("model", "optim", "penalty", "train", "early_stopping")


class NNRegressor(RegressorMixin, BaseEstimator):
    """Neural-network regressor trained by nnfin (``kind`` = ``mlp``, ``mlp-low`` or
    ``polynomial``), for one target (1-D ``y``, 1-D predictions) or several (2-D ``y``).

    Each parameter sets the config key named below and has that key's default, except
    ``device`` (``"cpu"``), ``seed`` (``None``) and ``progress`` (``False``). The rules of
    the names are in :mod:`nnfin.sklearn`; :mod:`nnfin.config` describes every key.

    Parameters
    ----------
    kind : str, default="mlp"
        ``[model] kind``: ``mlp``, ``mlp-low`` or ``polynomial``.
    neurons : tuple of int, default=(6, 6)
        ``[model] neurons``: hidden widths (an int is one hidden layer).
    degree : int, default=3
        ``[model] degree``: degree of the polynomial model.
    activation : str, default="sigmoid"
        ``[model] activation``: hidden activation.
    init : str, default="default"
        ``[model] init``: weight initialisation.
    optimizer : str, default="adam"
        ``[optim] name``: gd, sgd, adam, adamw, rmsprop or lbfgs.
    lr : float, default=0.03
        ``[optim] lr``: learning rate.
    momentum : float, default=0.0
        ``[optim] momentum``: sgd / rmsprop momentum.
    nesterov : bool, default=False
        ``[optim] nesterov``: sgd with Nesterov momentum.
    betas : tuple of float, default=(0.9, 0.999)
        ``[optim] betas``: adam / adamw betas.
    eps : float, default=1e-8
        ``[optim] eps``: adam / adamw / rmsprop epsilon.
    weight_decay : float, default=0.0
        ``[optim] weight_decay``: decoupled (adamw) or coupled weight decay.
    history_size : int, default=100
        ``[optim] history_size``: lbfgs memory.
    max_iter : int, default=20
        ``[optim] max_iter``: lbfgs iterations per step (not the number of epochs: that is
        ``epochs``).
    line_search : str, default="strong_wolfe"
        ``[optim] line_search``: lbfgs line search, ``strong_wolfe`` or ``none``.
    schedule : str, default="none"
        ``[optim] schedule``: none, step, exponential, cosine, onecycle or plateau.
    step_size : int, default=100
        ``[optim] step_size``: step schedule, epochs between decays.
    gamma : float, default=0.5
        ``[optim] gamma``: step / exponential schedule, decay factor.
    min_lr : float, default=0.0
        ``[optim] min_lr``: cosine schedule, final learning rate.
    max_lr : float or None, default=None
        ``[optim] max_lr``: onecycle schedule, peak learning rate (``None``: 10 x ``lr``).
    factor : float, default=0.5
        ``[optim] factor``: plateau schedule, decay factor.
    optim_patience : int, default=10
        ``[optim] patience``: plateau schedule, epochs without improvement.
    l1 : float, default=0.0
        ``[penalty] l1``: L1 lambda.
    l2 : float, default=0.0
        ``[penalty] l2``: L2 lambda.
    include_bias : bool, default=True
        ``[penalty] include_bias``: penalise the biases too.
    epochs : int, default=200
        ``[train] epochs``: passes over the training rows (fewer with early stopping).
    iterations : int or None, default=None
        ``[train] iterations``: total steps instead of ``epochs`` (it wins when set).
    batch_size : int, default=64
        ``[train] batch_size``: mini-batch size, capped at the number of training rows.
    sampling : str, default="shuffle"
        ``[train] sampling``: shuffle, choice or full.
    loss : str, default="mse"
        ``[train] loss``: mse, sse, mae or huber.
    huber_delta : float, default=1.0
        ``[train] huber_delta``: huber threshold.
    device : str, default="cpu"
        ``[train] device``: auto, cpu, cuda, cuda:N or mps.
    dtype : str, default="float32"
        ``[train] dtype``: float32 or float64.
    seed : int, RandomState or None, default=None
        ``[train] seed``: seeds the initial weights, batch order and validation split. An int
        is the seed itself; ``None`` or a ``numpy.random.RandomState`` draws one per fit.
    progress : bool, default=False
        ``[train] progress``: show a progress bar.
    scale : bool, default=True
        ``[data] scale``: standardize inputs and outputs with training statistics.
    early_stopping : bool, default=False
        ``[early_stopping] enabled``: hold out ``validation_fraction`` of the rows and stop
        when ``monitor`` stops improving.
    monitor : str, default="val_loss"
        ``[early_stopping] monitor``: history column to watch.
    early_stopping_patience : int, default=20
        ``[early_stopping] patience``: epochs without improvement before stopping.
    min_delta : float, default=0.0
        ``[early_stopping] min_delta``: smallest change that counts.
    relative : bool, default=False
        ``[early_stopping] relative``: ``min_delta`` is relative to the best value.
    start_from_epoch : int, default=0
        ``[early_stopping] start_from_epoch``: ignore epochs before this one.
    restore_best : bool, default=True
        ``[early_stopping] restore_best``: keep the best weights at the end.
    validation_fraction : float, default=0.1
        No config key: the share of rows held out with ``early_stopping``.
    overrides : list of str, default=()
        ``"section.key=value"`` strings (``nnfin fit --set``) for the keys of ``[model]``,
        ``[optim]``, ``[penalty]``, ``[train]`` and ``[early_stopping]`` that have no
        parameter: ``[train] derivative_weight``, ``[train] threads``, ``[train] compile``,
        ``[train] distributed``, ``[train] tensorboard`` and ``[train] tensorboard_every``. A
        key that has a parameter is set by it: an override of it is an error.

    Fitted attributes: ``model_`` (a ``torch.nn.Module``), ``scaler_`` (or ``None``),
    ``history_`` (one row per epoch), ``n_iter_`` (epochs run), ``n_features_in_``,
    ``feature_names_in_`` (given a DataFrame), ``n_outputs_``, ``config_`` (the
    :class:`~nnfin.config.Config` trained).

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> pipe = make_pipeline(StandardScaler(), NNRegressor(epochs=5, seed=0))
    """

    def __init__(self, kind: str = "mlp", neurons: int | Sequence[int] = (6, 6), *,
                 degree: int = 3, activation: str = "sigmoid", init: str = "default",
                 optimizer: str = "adam", lr: float = 0.03, momentum: float = 0.0,
                 nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, history_size: int = 100,
                 max_iter: int = 20, line_search: str = "strong_wolfe", schedule: str = "none",
                 step_size: int = 100, gamma: float = 0.5, min_lr: float = 0.0,
                 max_lr: float | None = None, factor: float = 0.5, optim_patience: int = 10,
                 l1: float = 0.0, l2: float = 0.0, include_bias: bool = True,
                 epochs: int = 200, iterations: int | None = None, batch_size: int = 64,
                 sampling: str = "shuffle", loss: str = "mse", huber_delta: float = 1.0,
                 device: str = "cpu", dtype: str = "float32",
                 seed: int | np.random.RandomState | None = None, progress: bool = False,
                 scale: bool = True, early_stopping: bool = False, monitor: str = "val_loss",
                 early_stopping_patience: int = 20, min_delta: float = 0.0,
                 relative: bool = False, start_from_epoch: int = 0, restore_best: bool = True,
                 validation_fraction: float = 0.1, overrides: Sequence[str] = ()) -> None:
        self.kind = kind
        self.neurons = neurons
        self.degree = degree
        self.activation = activation
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.history_size = history_size
        self.max_iter = max_iter
        self.line_search = line_search
        self.schedule = schedule
        self.step_size = step_size
        self.gamma = gamma
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.factor = factor
        self.optim_patience = optim_patience
        self.l1 = l1
        self.l2 = l2
        self.include_bias = include_bias
        self.epochs = epochs
        self.iterations = iterations
        self.batch_size = batch_size
        self.sampling = sampling
        self.loss = loss
        self.huber_delta = huber_delta
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.progress = progress
        self.scale = scale
        self.early_stopping = early_stopping
        self.monitor = monitor
        self.early_stopping_patience = early_stopping_patience
        self.min_delta = min_delta
        self.relative = relative
        self.start_from_epoch = start_from_epoch
        self.restore_best = restore_best
        self.validation_fraction = validation_fraction
        self.overrides = overrides

    # ------------------------------------------------------------------ sklearn API

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = self.seed is None
        return tags

    def fit(self, X: Any, y: Any) -> NNRegressor:
        """Train a fresh network for ``epochs`` epochs (``iterations`` steps when set; fewer
        with early stopping)."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y2 = self._targets(y)
        seed = self._seed()
        n = X.shape[0]
        idx_train, idx_val = np.arange(n), np.arange(0)
        if self.early_stopping:
            idx_train, idx_val = self._holdout(n, seed)
        cfg = self._config(seed, n_train=len(idx_train))
        data = data_from_indices(X, y2, idx_train, idx_val, np.arange(0), features=self._names(),
                                 targets=self._target_names(y2), scale=cfg.data.scale,
                                 device=self._device(cfg), dtype=cfg.train.dtype)
        self._start(cfg, data.scaler, X.shape[1], y2.shape[1])
        self._train(data, cfg, None)
        return self

    def partial_fit(self, X: Any, y: Any) -> NNRegressor:
        """One more epoch on ``(X, y)``, keeping weights, scaling, optimizer and batch order.

        The first call sets up the model and fits the scaling on its rows; later calls reuse
        them (no early stopping here: every row trains). On the rows ``fit`` saw, ``fit`` with
        ``epochs=k`` followed by ``partial_fit`` gives the weights of ``epochs=k + 1`` (without a
        ``schedule``: each call starts the schedule afresh).
        """
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64,
                             reset=first)
        y2 = self._targets(y) if first else np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if first:
            cfg = self._config(self._seed(), n_train=X.shape[0])
            scaler = Standardizer.fit(torch.as_tensor(np.array(X)), torch.as_tensor(y2)) \
                if cfg.data.scale else None
            self._start(cfg, scaler, X.shape[1], y2.shape[1])
        elif y2.shape[1] != self.n_outputs_:
            raise ConfigError(f"NNRegressor: y has {y2.shape[1]} target column(s); it was fitted "
                              f"with n_outputs_ = {self.n_outputs_}")
        cfg = load_config(self.config_, [f"train.batch_size={min(self.batch_size, X.shape[0])}",
                                         "early_stopping.enabled=false",
                                         f"train.progress={str(bool(self.progress)).lower()}"])
        data = data_from_indices(X, y2, np.arange(len(X)), np.arange(0), np.arange(0),
                                 features=self._names(), targets=self._target_names(y2),
                                 scale=False, device=self._device(cfg), dtype=cfg.train.dtype)
        if self.scaler_ is not None:  # the first fit's scaling, applied as data_from_indices does
            data.scaler = self.scaler_
            for name in ("train", "val", "test"):
                xs, ys = data.split(name, scaled=False)
                data.scaled[f"x_{name}"] = self.scaler_.transform_x(xs)
                data.scaled[f"y_{name}"] = self.scaler_.transform_y(ys)
        self._train(data, cfg, 1)
        return self

    @torch.no_grad()
    def predict(self, X: Any) -> np.ndarray:
        """Predictions in the units of ``y``: shape (n,) for 1-D ``y``, else (n, n_outputs_)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        param = next(self.model_.parameters())
        t = torch.as_tensor(np.array(X)).to(param.device)  # a writable copy (X may be read-only)
        if self.scaler_ is not None:
            t = self.scaler_.transform_x(t)
        was_training = self.model_.training
        self.model_.eval()
        out = self.model_(t.to(param.dtype)).to(torch.float64)
        self.model_.train(was_training)
        if self.scaler_ is not None:
            out = self.scaler_.inverse_y(out)
        out = out.cpu().numpy()
        return out.ravel() if self._y_ndim == 1 else out

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str = "cpu") -> NNRegressor:
        """A fitted estimator whose ``predict`` uses a saved run's model and scaling.

        Its parameters are the run's config, so ``clone(est).fit(X, y)`` trains a similar
        network afresh.

        >>> est = NNRegressor.from_run("runs/my-run")  # doctest: +SKIP
        >>> est.predict([[0.5]])  # doctest: +SKIP
        """
        from nnfin.runs import load_run

        run = load_run(run_dir, device=device)
        c = run.config
        values = {param: getattr(getattr(c, section), key) for param, (section, key) in _PARAMS.items()}
        values.update(neurons=tuple(c.model.neurons), betas=tuple(c.optim.betas), device=device,
                      epochs=c.train.epochs or 200, progress=False)
        est = cls(**values)
        est.model_, est.scaler_, est.config_ = run.model, run.scaler, c
        est.history_ = run.history
        est.n_iter_ = int(run.metrics.get("epochs", len(run.history)))
        est.n_features_in_, est.n_outputs_ = len(run.features), len(run.targets)
        if c.data.kind not in BUILTIN_TARGETS:  # real column names: DataFrames are matched by them
            est.feature_names_in_ = np.asarray(run.features, dtype=object)
        est._y_ndim = 1 if len(run.targets) == 1 else 2
        est._optimizer_state, est._sampler_state = None, None
        est.run_dir_ = Path(run_dir)
        return est

    # ------------------------------------------------------------------ helpers

    def _targets(self, y: np.ndarray) -> np.ndarray:
        self._y_ndim = y.ndim
        y = np.asarray(y, dtype=np.float64)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _start(self, cfg: Config, scaler: Standardizer | None, n_in: int, n_out: int) -> None:
        """Fresh fitted state: a seeded network on the device, no history, no optimizer state."""
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left untouched
            torch.manual_seed(cfg.train.seed)
            net = build_model(cfg.model, in_dim=n_in, out_dim=n_out)
        self.model_ = net.to(device=self._device(cfg), dtype=getattr(torch, cfg.train.dtype))
        self.scaler_, self.config_, self.n_outputs_ = scaler, cfg, n_out
        self.n_iter_, self.history_ = 0, pd.DataFrame()
        self._optimizer_state: dict[str, Any] | None = None
        self._sampler_state: torch.Tensor | None = None

    def _seed(self) -> int:
        if isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool):
            return int(self.seed)
        return int(check_random_state(self.seed).randint(0, 2**31 - 1))

    def _names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else \
            [f"x{j}" for j in range(self.n_features_in_)]

    @staticmethod
    def _target_names(y2: np.ndarray) -> list[str]:
        return [f"y{j}" for j in range(y2.shape[1])]

    def _holdout(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        frac = self.validation_fraction
        if not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
            raise ConfigError(f"NNRegressor: validation_fraction = {frac!r} must be in (0, 1) "
                              "with early_stopping = True")
        n_val = max(1, round(frac * n))
        if n - n_val < 1:
            raise ConfigError(f"NNRegressor: validation_fraction = {frac!r} leaves no training "
                              f"rows of n_samples = {n} (early_stopping needs 2 or more)")
        perm = np.random.default_rng(seed).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _config(self, seed: int, *, n_train: int) -> Config:
        """The parameters as a validated Config; a bad value names the estimator parameter."""
        raw: dict[str, dict[str, Any]] = {"run": {"plots": False}}
        for param, (section, key) in _PARAMS.items():
            value = getattr(self, param)
            if param == "neurons":
                value = [value] if isinstance(value, (int, np.integer)) else list(value)
            raw.setdefault(section, {})[key] = value
        raw["train"]["seed"] = seed
        if isinstance(self.batch_size, (int, np.integer)) and self.batch_size > n_train:
            raw["train"]["batch_size"] = n_train
        overrides = self._overrides()
        try:
            return load_config(raw, overrides)
        except ConfigError as exc:
            raise ConfigError(_param_message(str(exc))) from None

    def _overrides(self) -> list[str]:
        """``overrides`` checked: strings for keys of the five sections that have no parameter."""
        items = [self.overrides] if isinstance(self.overrides, str) else self.overrides
        if not isinstance(items, Sequence) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"NNRegressor: overrides = {self.overrides!r} must be a list of "
                              '"section.key=value" strings')
        targets = {where: param for param, where in _PARAMS.items()}
        for item in items:
            parts = item.partition("=")[0].strip().split(".")
            if len(parts) >= 2 and parts[0] not in _OVERRIDE_SECTIONS:
                raise ConfigError(f"NNRegressor: overrides item {item!r} sets [{parts[0]}]; it may "
                                  f"set [{'], ['.join(_OVERRIDE_SECTIONS)}] (the data are fit's X "
                                  "and y)")
            param = targets.get((parts[0], parts[-1])) if len(parts) == 2 else None
            if param is not None:
                raise ConfigError(f"NNRegressor: overrides item {item!r} sets [{parts[0]}] "
                                  f"{parts[1]}, which is the parameter {param}: set {param} instead")
        return list(items)

    def _device(self, cfg: Config) -> torch.device:
        return resolve_device(cfg.train.device, cfg.train.dtype)

    def _train(self, data: Any, cfg: Config, epochs: int | None) -> None:
        """Run the loop (for ``epochs`` epochs when given, else as ``cfg`` says), continuing the
        optimizer state if there is one."""
        if epochs is not None:
            raw = cfg.to_dict()
            raw["train"].pop("iterations", None)
            raw["train"]["epochs"] = epochs
            cfg = validate(raw)
        callbacks: list[Callback] = []
        if cfg.train.progress:
            callbacks.append(ProgressBar())
        stopper = EarlyStopping.from_config(cfg.early_stopping)
        if stopper is not None and data.x_val.shape[0] > 0:
            callbacks.append(stopper)
        trainer = Trainer(self.model_, data, cfg, callbacks=callbacks)
        if self._optimizer_state is not None:  # continue: same optimizer moments, next batches
            trainer.optimizer.load_state_dict(self._optimizer_state)
            trainer.sampler.generator.set_state(self._sampler_state)
        state = trainer.fit()
        if state.status == "diverged":
            raise ConfigError(f"NNRegressor: {state.stop_reason.replace('[optim] lr', 'lr')}")
        self._optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
        self._sampler_state = trainer.sampler.generator.get_state()
        history = pd.DataFrame(state.history)
        if len(history) and len(self.history_):  # partial_fit: epochs and steps keep counting
            history["epoch"] += self.n_iter_
            history["step"] += int(self.history_["step"].iloc[-1])
        self.history_ = pd.concat([self.history_, history], ignore_index=True) \
            if len(self.history_) else history
        self.n_iter_ += state.epoch


def _param_message(msg: str) -> str:
    """``[optim] lr = -1.0: ...`` -> ``NNRegressor: lr = -1.0: ...`` (the estimator's names;
    an override's ``--set 'x'`` is ``overrides item 'x'``)."""
    for param, (section, key) in _PARAMS.items():
        prefix = f"[{section}] {key}"
        if msg.startswith(prefix) and msg[len(prefix):len(prefix) + 1] in (" ", "."):
            return f"NNRegressor: {param}{msg[len(prefix):]}"
    return f"NNRegressor: {msg.replace('--set ', 'overrides item ')}"


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """scikit-learn estimator checks this estimator is known to fail, with the reasons.

    >>> from sklearn.utils.estimator_checks import parametrize_with_checks
    >>> marks = parametrize_with_checks([NNRegressor(epochs=5)],  # doctest: +SKIP
    ...                                 expected_failed_checks=expected_failed_checks)
    """
    return {}
