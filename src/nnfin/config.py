"""The run configuration: TOML sections validated by pydantic, with ``--set`` overrides.

A config is the user-facing contract. Every section and key is declared here once; unknown
ones are errors with a "did you mean" hint, and every message names the field and the value.

>>> cfg = load_config(None, overrides=["optim.lr=0.001", "model.neurons=[16,16]"])
>>> cfg.optim.lr, cfg.model.neurons
(0.001, [16, 16])
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nnfin.errors import ConfigError, did_you_mean
from nnfin.searchspace import FIXED_SECTIONS, parse_space

ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "softplus", "gelu", "silu")
INITS = ("default", "lecture", "xavier", "xavier-normal", "kaiming", "kaiming-normal", "sklearn")
OPTIMIZERS = ("gd", "sgd", "adam", "adamw", "rmsprop", "lbfgs")
SCHEDULES = ("none", "step", "exponential", "cosine", "onecycle", "plateau")
LOSSES = ("mse", "sse", "mae", "huber")
BUILTIN_TARGETS = ("cos", "sin", "exp", "polynomial")
# copies of nnfin.data.finance_bridge.FINANCE_KINDS and nnfin.tune.storage.SCHEMES (config.py
# imports no higher-level package; tests check that the copies match)
FINANCE_KINDS = ("black-scholes", "implied-vol", "heston")
DATA_KINDS = (*BUILTIN_TARGETS, "file", *FINANCE_KINDS)
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
# every column the training loop logs per epoch (history.csv); val_loss needs validation rows
MONITORS = ("val_loss", "train_loss", "lr", "epoch", "step", "time")
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_DEPTH = 32  # deepest nesting of tables and lists a config may have


def _seed(bound: int) -> Any:
    """An ``int`` seed in ``[0, bound)``: every consumer (numpy, torch, scikit-learn) takes it."""

    def check(v: int) -> int:
        if not 0 <= v < bound:
            raise ValueError(f"must be a whole number from 0 to {bound - 1}")
        return v

    return Annotated[int, AfterValidator(check)]


Seed = _seed(2**63)  # torch.manual_seed and numpy generators (signed 64-bit, as TOML)
TuneSeed = _seed(2**31)  # KFold and Optuna samplers take 32-bit seeds; resumed studies add trials


def _plain(table: dict[str, Any]) -> dict[str, Any]:
    """Check a free-form table holds only finite numbers, strings, booleans, lists and tables
    (what its TOML copy in a run folder reloads as): no null, no dates, no other objects."""
    stack: list[tuple[str, Any]] = [(str(k), x) for k, x in table.items()]
    while stack:
        where, x = stack.pop()
        if isinstance(x, dict):
            stack.extend((f"{where}.{k}", y) for k, y in x.items())
        elif isinstance(x, list):
            stack.extend((f"{where}[{i}]", y) for i, y in enumerate(x))
        elif isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"{where} = {x!r} must be a finite number")
        elif not isinstance(x, bool | int | float | str):
            raise ValueError(f"{where} = {_short(repr(x))} must be a number, string, boolean, "
                             "list or table")
    return table


def _base_types(annotation: Any) -> set[Any]:
    """The plain types inside an annotation (``list[int] | None`` -> {int, NoneType})."""
    if get_origin(annotation) is Annotated:
        return _base_types(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if isinstance(a, type) or get_args(a)]
    if get_origin(annotation) is Literal:
        return set()
    return set().union(*(_base_types(a) for a in args)) if args else {annotation}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``epochs = true`` is not 1: a number field (or list of numbers) refuses true/false."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        types = _base_types(field.annotation)
        if bool in types or not types & {int, float}:
            return value
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in items):
            raise ValueError("must be a number, not true or false")
        return value


class DataConfig(Section):
    """``[data]``: where samples come from, how they are split and scaled."""

    kind: Literal[DATA_KINDS] = Field(  # type: ignore[valid-type]
        "cos", description="cos | sin | exp | polynomial | file | black-scholes | implied-vol | heston")
    n: int = Field(2000, ge=1, description="number of samples for generated data")
    low: float | None = Field(None, description="lower end of x (default -pi/2)")
    high: float | None = Field(None, description="upper end of x (default 3pi/2)")
    sampling: Literal["uniform", "grid"] = Field("uniform", description="random x or linspace")
    noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added to the target")
    coefficients: list[float] = Field(
        default_factory=lambda: [0.0, 1.0], description="polynomial target: c0 + c1 x + ..."
    )
    path: str | None = Field(None, description="CSV or Parquet file for kind = 'file'")
    features: list[str] | None = Field(None, description="input column names")
    target: str | list[str] | None = Field(None, description="output column name(s)")
    split: list[float] = Field(
        default_factory=lambda: [0.7, 0.15, 0.15], description="train / validation / test"
    )
    scale: bool = Field(True, description="standardize inputs and outputs (train statistics)")
    shuffle: bool = Field(True, description="split a seeded permutation of the rows (false: keep "
                          "the row order: train = the first rows, then validation, then test)")
    seed: Seed = Field(0, description="seed for sampling, noise and the split")
    options: dict[str, Any] = Field(
        default_factory=dict, description="extra options for generated finance datasets"
    )
    derivatives: dict[str, str] = Field(
        default_factory=dict,
        description="differential training: feature -> column with dy/dfeature ('-col' negates)",
    )

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _plain(v)

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            twice = next((f for i, f in enumerate(v) if f in v[:i]), None)
            if twice is not None:
                raise ValueError(f"names column {twice!r} twice; give each input once")
            if not v:
                raise ValueError("is empty; name at least one input column (or leave it out)")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: list[float]) -> list[float]:
        if len(v) == 2:
            v = [*v, 0.0]
        if len(v) != 3 or any(p < 0 or not math.isfinite(p) for p in v):
            raise ValueError(f"must be [train, validation, test] fractions >= 0, got {v!r}")
        if abs(sum(v) - 1.0) > 1e-9 or v[0] <= 0:
            raise ValueError(f"fractions must sum to 1 with train > 0, got {v!r}")
        return v

    @model_validator(mode="after")
    def _range(self) -> DataConfig:
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low = {self.low!r} must be below high = {self.high!r}")
        return self


class ModelConfig(Section):
    """``[model]``: the network (or polynomial) to train."""

    kind: Literal["polynomial", "mlp-low", "mlp"] = Field("mlp", description="model family")
    neurons: list[int] = Field(default_factory=lambda: [6, 6], description="hidden widths")
    degree: int = Field(3, ge=0, le=30, description="degree of the polynomial model")
    activation: Literal[ACTIVATIONS] = Field("sigmoid", description="hidden activation")  # type: ignore[valid-type]
    init: Literal[INITS] = Field("default", description="weight initialisation")  # type: ignore[valid-type]

    @field_validator("neurons")
    @classmethod
    def _neurons(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden widths must be >= 1, got {v!r}")
        return v


class OptimConfig(Section):
    """``[optim]``: optimizer and learning-rate schedule."""

    name: Literal[OPTIMIZERS] = Field("adam", description="optimizer")  # type: ignore[valid-type]
    lr: float = Field(0.03, gt=0.0, description="learning rate")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd / rmsprop momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam / adamw betas")
    eps: float = Field(1e-8, gt=0.0, description="adam / adamw / rmsprop epsilon")
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled (adamw) or coupled decay")
    history_size: int = Field(100, ge=1, description="lbfgs memory")
    max_iter: int = Field(20, ge=1, description="lbfgs iterations per step")
    line_search: Literal["strong_wolfe", "none"] = Field("strong_wolfe", description="lbfgs")
    schedule: Literal[SCHEDULES] = Field("none", description="learning-rate schedule")  # type: ignore[valid-type]
    step_size: int = Field(100, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="step / exponential: decay factor")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: final learning rate")
    max_lr: float | None = Field(None, gt=0.0, description="onecycle: peak lr (default 10 x lr)")
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau: decay factor")
    patience: int = Field(10, ge=0, description="plateau: epochs without improvement")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        for i, b in enumerate(v):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"beta at index {i} must be in [0, 1), got {b!r}")
        return v


class PenaltyConfig(Section):
    """``[penalty]``: L1 / L2 terms added to the loss (lambda * sum|w|, lambda * sum w^2)."""

    l1: float = Field(0.0, ge=0.0, description="L1 lambda")
    l2: float = Field(0.0, ge=0.0, description="L2 lambda")
    include_bias: bool = Field(True, description="penalise biases too (the lecture does)")


class TrainConfig(Section):
    """``[train]``: the loop."""

    epochs: int | None = Field(200, ge=1, description="passes over the training data")
    iterations: int | None = Field(None, ge=1, description="total steps instead of epochs")
    batch_size: int = Field(64, ge=1, description="mini-batch size (sampling = 'full' ignores it)")
    sampling: Literal["shuffle", "choice", "full"] = Field(
        "shuffle", description="epoch shuffling | per-step choice without replacement | full"
    )
    loss: Literal[LOSSES] = Field("mse", description="mse | sse (sum of squares) | mae | huber")  # type: ignore[valid-type]
    huber_delta: float = Field(1.0, gt=0.0, description="huber threshold")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["float32", "float64"] = Field("float32", description="tensor precision")
    seed: Seed = Field(0, description="seed for initialisation and batch order")
    derivative_weight: float = Field(
        1.0, ge=0.0, description="weight of the derivative loss when [data] derivatives is set")
    progress: bool = Field(True, description="show a progress bar")
    threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads while training: auto (one for small networks, torch's "
        "default for large ones) or a number")
    compile: bool = Field(False, description="train through torch.compile (first epoch compiles)")
    distributed: bool = Field(False, description="DistributedDataParallel under torchrun")
    tensorboard: bool = Field(False, description="write TensorBoard logs into <run>/tensorboard")
    tensorboard_every: int = Field(10, ge=1, description="epochs between weight/gradient histograms")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in DEVICES or re.fullmatch(r"cuda:[0-9]{1,4}", v):
            return v
        raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps{did_you_mean(v, DEVICES)}")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        """``"auto"`` or a whole number from 1 to 1024 (``2``, ``"2"``, ``2.0``, ``1e3``); every
        other value is refused with what the key takes."""
        allowed = "must be 'auto' or a whole number of threads from 1 to 1024"
        if isinstance(v, bool):
            raise ValueError("must be a number, not true or false")
        if isinstance(v, str):
            if v == "auto":
                return v
            try:
                v = int(v.strip())
            except ValueError:
                raise ValueError(f"{allowed}{did_you_mean(v.strip().lower(), ['auto'])}") from None
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError("must be a finite number")
            if not v.is_integer():
                raise ValueError(allowed)
            v = int(v)
        if not isinstance(v, int) or not 1 <= v <= 1024:
            raise ValueError(allowed)
        return v

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.iterations is not None:
            self.__dict__["epochs"] = None  # iterations wins when both are given
        elif self.epochs is None:
            raise ValueError("set epochs or iterations")
        return self


class EarlyStoppingConfig(Section):
    """``[early_stopping]``: stop when the monitored metric stops improving."""

    enabled: bool = Field(False, description="turn early stopping on")
    monitor: Literal[MONITORS] = Field(  # type: ignore[valid-type]
        "val_loss", description="history column to watch: val_loss | train_loss | lr | epoch | step | time")
    patience: int = Field(20, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts")
    relative: bool = Field(False, description="min_delta is relative to the best value")
    start_from_epoch: int = Field(0, ge=0, description="ignore epochs before this one")
    restore_best: bool = Field(True, description="load the best weights at the end")


class RunConfig(Section):
    """``[run]``: where the run folder goes."""

    dir: str | None = Field(None, description="run folder (default runs/<time>-<model>-<data>)")
    root: str = Field("runs", description="parent of auto-named run folders")
    checkpoint_every: int = Field(10, ge=1, description="epochs between last.ckpt writes")
    plots: bool = Field(True, description="write plots/fit.png and plots/loss.png")


TUNE_METRICS = ("val_mse", "val_rmse", "val_mae", "val_r2", "val_max_abs_error", "val_loss")


class TuneConfig(Section):
    """``[tune]``: hyperparameter search by K-fold cross-validation (``nnfin tune``, ``nnfin cv``).

    ``[tune.space]`` maps dotted config keys to candidates: a list (categorical), ``{low, high,
    log}`` (float range) or ``{low, high, step}`` (integer range); see :mod:`nnfin.tune.space`.
    """

    strategy: Literal["grid", "random", "bayes"] = Field("grid", description="how to pick trials")
    trials: int | None = Field(None, ge=1, description="trials to complete (default: grid size, or 20)")
    folds: int = Field(5, ge=2, description="K of the K-fold cross-validation")
    cv: Literal["kfold", "time-series"] = Field(
        "kfold", description="kfold (scikit-learn KFold) | time-series (TimeSeriesSplit: train on "
        "the past, validate on the next block; needs [data] shuffle = false)")
    metric: Literal[TUNE_METRICS] = Field(  # type: ignore[valid-type]
        "val_mse", description="held-out-fold metric to rank by (val_r2 is maximised)")
    seed: TuneSeed = Field(0, description="seed of the folds and the sampler")
    sampler: Literal["tpe", "gp"] = Field("tpe", description="bayes: TPE or Gaussian process")
    pruning: bool = Field(False, description="stop poor trials early (median of running fold means)")
    storage: str = Field("sqlite", description="sqlite (tune/study.db in the run) | sqlite:///f.db | "
                         "postgresql://user:pw@host/db | memory")
    study: str | None = Field(None, description="study name (default: derived from the config)")
    inner_val: float = Field(0.15, gt=0.0, lt=1.0,
                             description="share of a fold's training rows used for early stopping")
    heartbeat: int = Field(10, ge=1, description="seconds between heartbeats of a running trial; "
                           "one silent for 3x this is failed and retried")
    retries: int = Field(3, ge=0, description="retries of a trial whose worker died")
    refit: bool = Field(True, description="refit the best configuration and test it once")
    batched: bool = Field(True, description="train folds and candidates the batched engine supports "
                          "as stacks of networks (false: one model at a time)")
    batch_memory_mb: int = Field(2048, ge=1, description="memory budget of one stack of networks "
                                 "in the batched engine (larger searches are cut into stacks)")
    batch_trials: int | None = Field(
        None, ge=1, description="trials asked of the sampler at once and cross-validated together "
        "(default: grid and random up to 64, bayes 8; 1 with pruning or batched = false)")
    space: dict[str, Any] = Field(default_factory=dict, description="dotted key -> candidates")

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if v in ("sqlite", "memory"):
            return v
        scheme = v.split(":", 1)[0].split("+", 1)[0]
        if "://" not in v or scheme not in STORAGE_SCHEMES:
            raise ValueError("must be sqlite, memory, sqlite:///path.db or postgresql://user:pw@host/db"
                             + did_you_mean(v, ("sqlite", "memory")))
        return v

    @field_validator("space")
    @classmethod
    def _plain_space(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _plain(v)

    @model_validator(mode="after")
    def _space(self) -> TuneConfig:
        parse_space(self.space, tunable_keys())
        return self


class Config(Section):
    """A complete run configuration. Every field has a default: ``Config()`` is the lecture."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    penalty: PenaltyConfig = Field(default_factory=PenaltyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tune: TuneConfig | None = Field(None, description="[tune]: used by nnfin tune and nnfin cv")

    @model_validator(mode="after")
    def _time_order(self) -> Config:
        from pydantic_core import PydanticCustomError

        if self.tune is not None and self.tune.cv == "time-series" and self.data.shuffle:
            raise PydanticCustomError(
                "time_order", "[tune] cv = 'time-series' needs ordered rows: set [data] shuffle = false "
                "(a shuffled split scatters the test rows through the past)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, TOML-ready dict (``None`` values are dropped, as TOML has no null)."""
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        """The fully resolved config as TOML text; loading it gives the same config."""
        return tomli_w.dumps(self.to_dict())


def tunable_keys() -> dict[str, str]:
    """``{"optim.lr": "float", "model.neurons": "other", ...}``: keys a search may vary."""
    keys: dict[str, str] = {}
    for section, field in Config.model_fields.items():
        if section in FIXED_SECTIONS:
            continue
        model = field.annotation
        for key, sub in model.model_fields.items():  # type: ignore[union-attr]
            ann = str(sub.annotation)
            kind = "int" if sub.annotation is int or ann == "int | None" else \
                "float" if sub.annotation is float or ann == "float | None" else "other"
            keys[f"{section}.{key}"] = kind
    keys.update({"model.width": "int", "model.layers": "int"})
    return keys


def flatten(raw: dict[str, Any], *, deep: bool = False, prefix: str = "") -> dict[str, Any]:
    """A config's keys as dotted names: ``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``.

    Table-valued keys (``[data] options``, ``derivatives``, ``[tune] space``) stay whole values
    unless ``deep``; lists always stay values.

    >>> flatten({"optim": {"lr": 0.1}, "data": {"options": {"N": 64}}})
    {'optim.lr': 0.1, 'data.options': {'N': 64}}
    >>> flatten({"data": {"options": {"N": 64}}}, deep=True)
    {'data.options.N': 64}
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and (deep or not prefix):
            out.update(flatten(value, deep=deep, prefix=name + "."))
        else:
            out[name] = value
    return out


def tune_section(cfg: Config) -> TuneConfig:
    """``[tune]`` of ``cfg``, or its defaults when the config has none."""
    return cfg.tune if cfg.tune is not None else TuneConfig()


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


# ---------------------------------------------------------------------------- loading


def load_config(
    source: str | Path | dict | Config | None = None, overrides: list[str] | tuple = ()
) -> Config:
    """Build a validated :class:`Config` from a TOML path, a dict or ``None`` (defaults).

    ``overrides`` are ``"section.key=value"`` strings (or one such string); values are parsed
    as TOML (``lr=1e-3``, ``neurons=[16,16]``, ``kind="mlp"``) and fall back to plain strings.
    ``[data] path`` in a TOML file is relative to that file's folder (made absolute here, so the
    run's own ``config.toml`` reruns from anywhere); paths given in ``overrides`` or in a dict
    are relative to the working directory.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides = {overrides!r} must be a \"section.key=value\" string or a list "
                          "of them")
    for i, item in enumerate(overrides):
        if not isinstance(item, str):
            raise ConfigError(f"overrides[{i}] = {item!r} must be a \"section.key=value\" string, "
                              "e.g. \"train.epochs=3\"")
    if isinstance(source, Config):
        raw = source.to_dict()
    elif isinstance(source, dict):
        _check_depth(source, "config")
        raw = _deepcopy(source)
    elif source is None:
        raw = {}
    elif isinstance(source, (str, Path)):
        raw = read_toml(source)
        data = raw.get("data")
        if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"] \
                and not Path(data["path"]).expanduser().is_absolute():
            data["path"] = str((Path(source).parent / data["path"]).absolute())
    else:
        raise ConfigError(f"config = {source!r} must be a TOML file path, a dict of sections or a "
                          "Config (or None for the lecture's defaults)")
    for item in overrides:
        _apply_override(raw, item)
    return validate(raw)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; syntax errors become one line naming the file and the line."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "is not a regular file" if p.exists() \
            else "does not exist"
        raise ConfigError(f"config file {str(p)!r} {what}")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is fine
        raw = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} nests tables or lists too deeply "
                          f"(at most {MAX_DEPTH} levels)") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc).replace("at end of document", f"at end of document, line {text.count(chr(10)) + 1}")
        raise ConfigError(f"config file {str(p)!r}: TOML syntax error: {msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    _check_depth(raw, f"config file {str(p)!r}")
    return raw


def _deepcopy(d: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def parse_value(text: str, where: str = "value") -> Any:
    """Parse an override value as TOML (numbers, booleans, lists, strings); else a string.

    A value nested deeper than :data:`MAX_DEPTH` is a :class:`ConfigError` naming ``where``.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"{where} nests lists or tables too deeply (at most {MAX_DEPTH} levels)") from None
    _check_depth(value, where)
    return value


def _check_depth(obj: Any, where: str) -> None:
    """Refuse tables and lists nested deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            shown = f" at {_short(path.lstrip('.'))}" if path else ""
            raise ConfigError(f"{where} nests tables or lists deeper than {MAX_DEPTH} levels{shown}")
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}", depth + 1) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a message (long values stay one short line)."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like section.key=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: key must be section.key, e.g. optim.lr=0.001")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
    node[parts[-1]] = parse_value(text.strip(), where=f"--set {_short(item)!r}")


def validate(raw: dict[str, Any]) -> Config:
    """Validate a raw dict; the first problem becomes a one-line :class:`ConfigError`."""
    _check_depth(raw, "config")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(" ".join(_format_error(exc, raw).splitlines())) from None
    except RecursionError:
        raise ConfigError(f"config nests tables or lists too deeply (at most {MAX_DEPTH} levels)") from None


def _format_error(exc: ValidationError, raw: dict) -> str:
    err = exc.errors()[0]
    loc = _field_loc(raw, [str(p) for p in err["loc"]])
    kind = err["type"]
    if not loc:
        return err["msg"]
    where = _where(loc)
    if kind == "extra_forbidden":
        model: type[BaseModel] = Config
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            for ann in (field.annotation, *get_args(field.annotation)) if field else ():
                if isinstance(ann, type) and issubclass(ann, BaseModel):  # TuneConfig | None too
                    model = ann
        known = list(model.model_fields)
        what = "section" if len(loc) == 1 else "key"
        return f"unknown {what} {where}{did_you_mean(loc[-1], known)} (known: {', '.join(known)})"
    value = _lookup(raw, loc)
    if loc == ["tune", "storage"] and isinstance(value, str):
        value = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", value)  # no passwords in messages
    msg = err["msg"]
    if kind == "finite_number":
        return f"{where} = {value!r}: must be a finite number"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in allowed.replace(" or ", ",").split(",")]
        return f"{where} = {value!r} is not allowed; choose one of {', '.join(choices)}" + (
            did_you_mean(str(value), choices)
        )
    if kind.startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    if kind == "model_type" and len(loc) == 1:
        return f"[{loc[0]}] must be a table (section), got {value!r}"
    if len(loc) == 1:
        return f"{where} {msg}"
    return f"{where} = {value!r}: {msg}"


def _where(loc: list[str]) -> str:
    loc = [f"[{p}]" if p.isdigit() else p for p in loc]  # list indices as betas[0]
    if len(loc) == 1:
        return f"[{loc[0]}]"
    return f"[{loc[0]}] {'.'.join(loc[1:])}".replace(".[", "[")


def _field_loc(raw: Any, loc: list[str]) -> list[str]:
    """``loc`` without pydantic's union tags (``target.str``, ``target.list[str].0``)."""
    out, node = [], raw
    for part in loc:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        elif node is not None:
            continue  # a tag naming a member of a union, not a key or an index
        out.append(part)
    return out


def _lookup(raw: Any, loc: list[str]) -> Any:
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
