"""Property tests: any config, ``--set`` item, TOML file or CSV file either works or is refused
with a one-line :class:`~nnfin.errors.NNFinError`; the CLI either succeeds or prints one line.

Values are drawn from the real schema (every section and key of :class:`~nnfin.config.Config`)
and from anything TOML can hold: wrong types, huge, negative and non-finite numbers, odd
strings, nested lists and tables.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import tomli_w
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from nnfin.config import Config, load_config
from nnfin.errors import NNFinError

COMMON = settings(deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                         HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _sections() -> dict[str, dict[str, Any]]:
    out = {}
    for name, field in Config.model_fields.items():
        model = next(a for a in (get_args(field.annotation) or (field.annotation,)) if a is not type(None))
        out[name] = dict(model.model_fields)
    return out


SECTIONS = _sections()
DOTTED = [f"{s}.{k}" for s, fields in SECTIONS.items() for k in fields]


def check_refusal(exc: NNFinError) -> None:
    msg = str(exc)
    assert msg.strip(), "an empty message"
    assert "\n" not in msg and "\r" not in msg, msg


# ----------------------------------------------------------------------------- value strategies

ODD_STRINGS = ["", " ", "\n", "\t", "\x00", "é", "😀", "nan", "inf", "-inf", "1e400", "0x10", "true",
               "auto", "cpu", "cuda", "cuda:0", "cuda:99", "mps", "val_loss", "sqlite", "memory",
               "sqlite:///x.db", "postgresql://u:p@h/db", "cos", "file", "heston", "a.b", "[1,2]",
               "../x", "/dev/null", "x" * 300]
ODD_INTS = [0, 1, -1, 2, 3, 30, 31, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
            -(2**63), -(2**64), 10**30, 10**400]
ODD_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 0.999, 1e-300, 5e-324, 1e300, 1.7976931348623157e308,
              math.inf, -math.inf, math.nan, 0.7, 0.15]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(ODD_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_FLOATS),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
    st.dates(), st.times(), st.datetimes(),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["low", "high", "log", "step", "x", *DOTTED]))
anything = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12)


def plausible(ann: Any, small: bool = False) -> st.SearchStrategy:
    """Values of the annotated type (in range or just outside), so validation goes past the type."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        typos = [a[:-1] for a in args if isinstance(a, str) and a] + [str(a).upper() for a in args]
        return mostly(st.sampled_from(args), st.sampled_from(typos))
    if origin in (Union, types.UnionType):
        return st.one_of(*[plausible(a, small) for a in args if a is not type(None)])
    if ann is bool:
        return st.booleans()
    if ann is int:
        if small:
            return st.integers(-1, 6)
        return mostly(st.integers(1, 70), st.integers(-3, 0) | st.sampled_from(ODD_INTS))
    if ann is float:
        if small:
            return st.floats(-0.5, 1.5) | st.sampled_from([0.0, 0.01, 0.5, math.inf, math.nan])
        return mostly(st.floats(0, 1), st.floats(-2, 3) | st.sampled_from(ODD_FLOATS))
    if ann is str:
        return st.sampled_from(ODD_STRINGS[:-1]) if small else st.sampled_from(ODD_STRINGS)
    if origin is list:
        return st.lists(plausible(args[0], small), max_size=4)
    if origin is tuple:
        return st.lists(plausible(args[0], small), min_size=1, max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=6), anything, max_size=3)
    return anything


SPACE_KEYS = ["optim.lr", "model.neurons", "model.width", "model.layers", "train.batch_size",
              "model.activation", "data.n", "run.dir", "tune.folds", "x.y", "optim.betas", "train.seed"]
space_entry = st.one_of(
    st.lists(anything, max_size=4),
    st.fixed_dictionaries({}, optional={"low": scalars, "high": scalars, "log": scalars, "step": scalars}),
    anything,
)
SPECIAL: dict[str, st.SearchStrategy] = {
    "tune.space": st.dictionaries(st.sampled_from(SPACE_KEYS) | st.text(max_size=6), space_entry,
                                  max_size=3),
    "data.split": st.lists(st.floats(-0.5, 1.5) | st.sampled_from(ODD_FLOATS), max_size=4),
    "data.derivatives": st.dictionaries(st.sampled_from(["x", "y", "S"]),
                                        st.sampled_from(["dydx", "-dydx", "delta", ""]), max_size=2),
}


def value_for(section: str, key: str, small: bool = False) -> st.SearchStrategy:
    field = SECTIONS.get(section, {}).get(key)
    if field is None:
        return anything
    special = SPECIAL.get(f"{section}.{key}")
    typed = special if special is not None else plausible(field.annotation, small)
    return typed if small else mostly(typed, anything)


def mostly(usual: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``usual`` about four times in five (hypothesis favours small numbers), else ``rare``."""
    return st.integers(0, 4).flatmap(lambda i: rare if i == 4 else usual)


@st.composite
def raw_configs(draw) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    names = draw(st.lists(mostly(st.sampled_from(list(SECTIONS)), st.sampled_from(["bogus", "Data"])),
                          max_size=4, unique=True))
    for section in names:
        if draw(st.integers(0, 15)) == 15:
            raw[section] = draw(anything)
            continue
        fields = list(SECTIONS.get(section, {"x": None}))
        chosen = draw(st.lists(mostly(st.sampled_from(fields), st.just("unknown_key")), max_size=4,
                               unique=True))
        raw[section] = {k: draw(value_for(section, k)) for k in chosen}
    return raw


def toml_text(value: Any) -> str | None:
    """``value`` as the right-hand side of a TOML assignment, or None if TOML cannot hold it."""
    try:
        return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
    except (TypeError, ValueError):
        return None


garbage = st.text(alphabet="[]{}=\"',.0123456789abcdefinx-+ e\\_:\n", max_size=30)


@st.composite
def set_items(draw) -> str:
    odd_key = st.sampled_from(["x", "data", ".x", "a..b", "data.options.k", "tune.space.x", "data.kind.x",
                               ""]) | st.text(max_size=10)
    key = draw(mostly(st.sampled_from(DOTTED), odd_key))
    section, _, name = key.partition(".")
    text = toml_text(draw(value_for(section, name)))
    text = draw(mostly(st.just(text), garbage) if text is not None else garbage)
    return draw(mostly(st.just(f"{key}={text}"), st.sampled_from([f"{key} = {text}", text, key])))


# ---------------------------------------------------------------------------- config properties


def assert_loads_or_refuses(source: Any, overrides: list[str] = ()) -> Config | None:
    try:
        cfg = load_config(source, list(overrides))
    except NNFinError as exc:
        check_refusal(exc)
        event("refused")
        return None
    event("loaded")
    assert isinstance(cfg, Config)
    again = load_config(tomllib.loads(cfg.to_toml()))  # what a run folder's config.toml reloads as
    assert again == cfg
    return cfg


@settings(COMMON, max_examples=350)
@given(raw=raw_configs())
@example(raw={"train": {"seed": 2**64}})
@example(raw={"data": {"seed": -1}})
@example(raw={"tune": {"seed": 2**40}})
@example(raw={"optim": {"lr": math.inf}, "penalty": {"l2": math.inf}})
@example(raw={"data": {"noise": math.inf, "coefficients": [math.nan]}})
@example(raw={"optim": {"betas": [0.5, math.inf]}})
@example(raw={"early_stopping": {"monitor": "val_mse"}})
@example(raw={"data": {"kind": "coss"}})
@example(raw={"train": {"device": "cuda:x"}})
@example(raw={"tune": {"storage": "sqlit"}})
@example(raw={"data": {"target": [[1]]}})
@example(raw={"tune": {"unknown_key": 1}})
@example(raw={"data": {"options": {"a": [None]}}})
@example(raw={"data": {"options": {"a": {"b": dt.time(1)}}}})
@example(raw={"tune": {"space": {"optim.lr": {"low": "a", "high": 1}}}})
@example(raw={"tune": {"space": {"optim.lr": {"low": 0.1, "high": 1.0, "log": 1}}}})
@example(raw={"tune": {"space": {"model.neurons": [[1, [2]]]}}})
@example(raw={"tune": {"space": {"train.batch_size": {"low": 1, "high": 2**70}}}})
def test_any_config_dict_loads_or_is_refused_in_one_line(raw):
    assert_loads_or_refuses(raw)


@settings(COMMON, max_examples=300)
@given(items=st.lists(set_items(), min_size=1, max_size=3))
@example(items=["model.neurons=" + "[" * 5000 + "]" * 5000])
@example(items=["data.options={a=" + "[" * 100 + "]" * 100 + "}"])
@example(items=["train.seed=99999999999999999999999"])
@example(items=["optim.lr=inf"])
@example(items=["optim.lr = nan"])
@example(items=["data.kind.x=1"])
@example(items=["data.options.k=1"])
@example(items=["x=1"])
@example(items=["optim.lr"])
@example(items=["data.options={a=1979-05-27T07:32:00Z}"])
def test_any_set_items_load_or_are_refused_in_one_line(items):
    assert_loads_or_refuses(None, items)


@st.composite
def toml_files(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        return draw(garbage).encode()
    raw = draw(raw_configs())
    try:
        text = tomli_w.dumps(raw)
    except (TypeError, ValueError):
        text = draw(garbage)
    if kind == 3 and text:  # a damaged copy
        cut = draw(st.integers(0, len(text) - 1))
        text = text[:cut] + draw(garbage) + text[cut:]
    return text.encode()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


@settings(COMMON, max_examples=150)
@given(content=toml_files())
@example(content=b"\xff\xfe[data]\n")
@example(content=b"[model]\nneurons = " + b"[" * 5000 + b"]" * 5000 + b"\n")
@example(content=b"[data]\noptions = {a = " + b"[" * 100 + b"]" * 100 + b"}\n")
@example(content=b"[data]\nkind = 'coss'\n")
@example(content=b"[tune]\nseed = 1e400\n")
@example(content=b"")
def test_any_toml_file_loads_or_is_refused_in_one_line(folder, content):
    path = folder / "config.toml"
    path.write_bytes(content)
    assert_loads_or_refuses(path)


# ------------------------------------------------------------------------------------ CSV files

COLUMNS = ["x", "y", "a", "x", "", " ", "é", "1", "x.1", "Unnamed: 0", "#"]
CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e400", "99999999999999999999999",
                                   "abc", "True", '"1,2"', '"', "1e-400", " 1 ", "0x1"]),
                  st.text(alphabet="0123456789.-e ,\"'", max_size=5))


@st.composite
def csv_contents(draw) -> bytes:
    kind = draw(st.integers(0, 9))  # (hypothesis favours small numbers: 0 is the clean case)
    if kind == 9:
        return draw(st.binary(max_size=80))
    if kind >= 7:  # anything goes: odd headers, ragged rows, odd cells
        header = draw(st.lists(st.sampled_from(COLUMNS), max_size=4))
        rows = draw(st.lists(st.lists(CELLS, max_size=len(header) + 1), max_size=8))
    else:  # a clean numeric table, then maybe one defect
        header = draw(st.lists(st.sampled_from(["x", "y", "a", "b"]), min_size=2, max_size=3, unique=True))
        n = draw(st.integers(3, 12))
        rows = [[repr(draw(st.floats(-10, 10))) for _ in header] for _ in range(n)]
        defect = draw(st.integers(0, 5))
        if defect == 1 and rows:
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            rows[i][j] = draw(CELLS)
        elif defect == 2:
            header = [*header, draw(st.sampled_from(header))]
        elif defect == 3 and rows:
            rows[-1] = rows[-1][:-1] if draw(st.booleans()) else [*rows[-1], "1"]
        elif defect == 4:
            rows = rows[:draw(st.integers(0, 2))]
    data = "\n".join(",".join(r) for r in [header, *rows]).encode()
    if draw(st.integers(0, 8)) == 8:
        data = data.replace(b"x", b"\xff")
    return data


columns = st.sampled_from(["x", "y", "a", "b"]) | st.sampled_from(COLUMNS)


@settings(COMMON, max_examples=200)
@given(content=csv_contents(),
       features=st.none() | st.none() | st.lists(columns, max_size=2),
       target=st.none() | st.none() | columns | st.lists(columns, max_size=2),
       split=st.sampled_from([[0.7, 0.15, 0.15], [1.0, 0.0, 0.0], [0.5, 0.5]]),
       suffix=st.sampled_from([".csv", ".csv", ".CSV", ".parquet", ".txt"]))
@example(content=b"", features=None, target=None, split=[0.7, 0.15, 0.15], suffix=".csv")
@example(content=b"x,x,y\n1,2,3\n4,5,6\n7,8,9\n", features=None, target=None, split=[1.0, 0, 0],
         suffix=".csv")
@example(content=b"x,y\n1,inf\n2,3\n", features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x,y\n\xff,1\n", features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x\n1\n2\n", features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x,y\n1,2\n", features=None, target=None, split=[0.7, 0.15, 0.15], suffix=".csv")
@example(content=b'"x\ny",a\n1,2\n3,4\n', features=["x"], target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x,y\n1,2\n1e300,4\n5,6\n", features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b'x,y\n1,"2\n', features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x,y\n1,2,3\n4,5\n", features=None, target=None, split=[1.0, 0, 0], suffix=".csv")
@example(content=b"a,b\n1,2\n3,4\n", features=[], target=[], split=[1.0, 0, 0], suffix=".csv")
@example(content=b"1,2\n3,4\n5,6\n", features=None, target="1", split=[1.0, 0, 0], suffix=".csv")
@example(content=b"x,y\n1,99999999999999999999999\n2,3\n", features=None, target=None,
         split=[1.0, 0, 0], suffix=".csv")
def test_any_csv_file_builds_or_is_refused_in_one_line(folder, content, features, target, split, suffix):
    from nnfin.data import build_data

    path = folder / f"data{suffix}"
    path.write_bytes(content)
    data: dict[str, Any] = {"kind": "file", "path": str(path), "split": split}
    if features is not None:
        data["features"] = features
    if target is not None:
        data["target"] = target
    try:
        built = build_data(load_config({"data": data}).data)
    except NNFinError as exc:
        check_refusal(exc)
        event("refused")
        return
    event("built")
    assert built.x_train.shape[0] >= 2


# ------------------------------------------------------------------------------------- the CLI

TINY = ["data.n=24", "train.epochs=1", "train.batch_size=8", "train.progress=false", "run.plots=false",
        "train.device=cpu", "run.checkpoint_every=1"]
# keys whose values make a run slow, need other machines or write outside the run folder
SLOW_OR_OUTSIDE = {"data.n", "data.path", "data.kind", "data.options", "train.epochs", "train.iterations",
                   "train.compile", "train.distributed", "train.tensorboard", "train.device", "run.dir",
                   "run.root", "optim.max_iter", "optim.history_size", "model.degree", "tune.space"}
CLI_KEYS = [k for k in DOTTED if k not in SLOW_OR_OUTSIDE and not k.startswith("tune.")]
CLI_EXTRA = {
    "data.kind": st.sampled_from(["cos", "sin", "exp", "polynomial", "file", "black-scholes", "coss"]),
    "train.epochs": st.integers(0, 2),
    "train.iterations": st.integers(-1, 3),
    "model.neurons": st.lists(st.integers(0, 4), max_size=3),
    "model.degree": st.integers(-1, 4),
    "data.n": st.integers(0, 30),
}


@st.composite
def cli_overrides(draw) -> list[str]:
    items = []
    for key in draw(st.lists(st.sampled_from([*CLI_KEYS, *CLI_EXTRA]), max_size=3, unique=True)):
        section, _, name = key.partition(".")
        strategy = CLI_EXTRA[key] if key in CLI_EXTRA else value_for(section, name, small=True)
        text = toml_text(draw(strategy))
        if text is not None:
            items.append(f"{key}={text}")
    return items


@settings(COMMON, max_examples=30)
@given(overrides=cli_overrides())
@example(overrides=["optim.lr=inf"])
@example(overrides=["early_stopping.enabled=true", "data.split=[1.0, 0.0, 0.0]"])
@example(overrides=["early_stopping.enabled=true", "early_stopping.monitor='val_mse'"])
@example(overrides=["train.seed=18446744073709551616"])
@example(overrides=["data.kind='coss'"])
def test_cli_fit_succeeds_or_prints_one_error_line(folder, capsys, overrides):
    from nnfin.cli import main

    out = folder / f"run{len(list(folder.iterdir()))}"
    argv = ["fit", "-q", "-o", str(out), *[a for o in [*TINY, *overrides] for a in ("--set", o)]]
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    event(f"exit code {code}")
    assert "Traceback" not in captured.out + captured.err, captured.err
    if code == 0:
        assert (out / "config.toml").exists()
        return
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, captured.err)
