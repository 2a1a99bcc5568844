"""Config values every consumer accepts: seeds, nesting depth, finite floats, enumerated names."""

from __future__ import annotations

import math
import re
from typing import get_args

import pytest

from conftest import FAST, assert_one_line_error
from nnfin.config import (
    DATA_KINDS,
    FINANCE_KINDS,
    MAX_DEPTH,
    MONITORS,
    STORAGE_SCHEMES,
    Config,
    load_config,
    read_toml,
    validate,
)
from nnfin.errors import ConfigError, NNFinError


def refused(*overrides: str, source=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source, list(overrides))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("key", ["train.seed", "data.seed", "tune.seed"])
@pytest.mark.parametrize("value", [-1, 2**64, 10**30, -(2**63)])
def test_seeds_out_of_range_are_refused_at_load(key, value):
    msg = refused(f"{key}={value}")
    section, name = key.split(".")
    assert msg.startswith(f"[{section}] {name} = {value}:") and "whole number from 0" in msg


@pytest.mark.parametrize("key,top", [("train.seed", 2**63 - 1), ("data.seed", 2**63 - 1),
                                     ("tune.seed", 2**31 - 1)])
def test_largest_seeds_are_accepted(key, top):
    cfg = load_config(None, [f"{key}={top}"])
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == top
    assert load_config(None, [f"{key}=0"]) is not None
    refused(f"{key}={top + 1}")


def test_largest_seeds_run_through_every_consumer():
    """torch, numpy, random (``seed_everything``) and the data split accept the bound."""
    import numpy as np
    import torch
    from sklearn.model_selection import KFold

    from nnfin.app.fit import seed_everything
    from nnfin.data import build_data
    from nnfin.train.sampler import BatchSampler

    cfg = load_config(None, [f"train.seed={2**63 - 1}", f"data.seed={2**63 - 1}", "data.n=10",
                             f"tune.seed={2**31 - 1}"])
    seed_everything(cfg.train.seed)
    BatchSampler(10, 4, "shuffle", seed=cfg.train.seed)
    build_data(cfg.data)
    np.random.default_rng([cfg.tune.seed, 4])
    list(KFold(n_splits=2, shuffle=True, random_state=cfg.tune.seed + 1000).split(np.arange(4)))
    torch.Generator().manual_seed(cfg.train.seed)


def test_huge_seed_is_one_line_in_the_cli(cli, tmp_path):
    res = cli("fit", "-q", "-o", str(tmp_path / "r"), "--set", f"train.seed={2**64}",
              *[a for o in FAST for a in ("--set", o)])
    assert_one_line_error(res, "[train] seed", str(2**64))


# ------------------------------------------------------------------------------------ depth


def test_deeply_nested_set_value_names_the_item():
    item = "model.neurons=" + "[" * 5000 + "]" * 5000
    msg = refused(item)
    assert "--set 'model.neurons=[[[" in msg and "too deeply" in msg and len(msg) < 300


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 200])
def test_nested_set_value_beyond_the_limit_but_parseable(depth):
    msg = refused("data.options={a=" + "[" * depth + "]" * depth + "}")
    assert "--set 'data.options=" in msg and "deeper than" in msg


def test_deeply_nested_toml_file_names_the_file(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("[model]\nneurons = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.toml.*too deeply"):
        read_toml(path)
    msg = refused(source=path)
    assert "deep.toml" in msg


def test_deep_but_parseable_toml_file_names_the_file(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("[data]\noptions = {a = " + "[" * 100 + "]" * 100 + "}\n")
    assert "deep.toml" in refused(source=path)


def test_deeply_nested_dict_is_refused():
    raw: dict = {}
    node = raw
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ConfigError, match="deeper than"):
        load_config(raw)
    with pytest.raises(ConfigError, match="deeper than"):
        validate({"tune": {"space": raw}})


def test_deep_cli_set_is_one_line(cli):
    res = cli("fit", "--set", "model.neurons=" + "[" * 5000 + "]" * 5000)
    assert_one_line_error(res, "--set", "model.neurons")


# ------------------------------------------------------------------------- non-finite numbers

FLOAT_KEYS = ["optim.lr", "optim.momentum", "optim.eps", "optim.weight_decay", "optim.gamma",
              "optim.min_lr", "optim.max_lr", "optim.factor", "penalty.l1", "penalty.l2",
              "train.huber_delta", "train.derivative_weight", "early_stopping.min_delta",
              "data.noise", "data.low", "data.high", "tune.inner_val"]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_floats_are_refused(key, value):
    msg = refused(f"{key}={value}")
    section, name = key.split(".")
    assert msg == f"[{section}] {name} = {float(value)!r}: must be a finite number"


def test_every_float_field_is_covered():
    seen = set()
    for section, field in Config.model_fields.items():
        model = field.annotation
        model = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))
        for name, f in model.model_fields.items():
            if f.annotation is float or set(get_args(f.annotation)) == {float, type(None)}:
                seen.add(f"{section}.{name}")
    assert seen == set(FLOAT_KEYS)


@pytest.mark.parametrize("item,where", [
    ("data.split=[0.5, inf, 0.5]", "[data] split[1] = inf"),
    ("data.coefficients=[0, -inf]", "[data] coefficients[1] = -inf"),
    ("optim.betas=[0.9, nan]", "[optim] betas[1] = nan"),
    ("data.options={sigma = {low = 0.1, high = inf}}", "sigma.high = inf"),
    ("data.options={x = [1.0, nan]}", "x[1] = nan"),
])
def test_non_finite_floats_in_lists_and_options(item, where):
    msg = refused(item)
    assert where in msg and "finite" in msg


def test_inf_lr_does_not_train(cli, tmp_path):
    res = cli("fit", "-q", "-o", str(tmp_path / "r"), "--set", "optim.lr=inf",
              *[a for o in FAST for a in ("--set", o)])
    assert_one_line_error(res, "[optim] lr = inf: must be a finite number")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- enumerated names


def test_copied_names_match_their_source():
    from nnfin.data.finance_bridge import ALL_KINDS
    from nnfin.data.finance_bridge import FINANCE_KINDS as SOURCE_KINDS
    from nnfin.tune.storage import SCHEMES

    assert FINANCE_KINDS == SOURCE_KINDS
    assert DATA_KINDS == ALL_KINDS
    assert STORAGE_SCHEMES == SCHEMES


def test_trainer_logs_exactly_the_monitors():
    from nnfin.data import build_data
    from nnfin.models import build_model
    from nnfin.train.loop import Trainer

    cfg = load_config(None, ["data.n=40", "train.batch_size=8", "train.epochs=2", "train.progress=false",
                             "train.device=cpu"])
    data = build_data(cfg.data)
    state = Trainer(build_model(cfg.model, in_dim=1, out_dim=1), data, cfg).fit()
    assert set(state.history[-1]) == set(MONITORS)


@pytest.mark.parametrize("item,fragments", [
    ("early_stopping.monitor=val_los", ["monitor = 'val_los'", "did you mean 'val_loss'"]),
    ("early_stopping.monitor=loss", ["choose one of val_loss, train_loss"]),
    ("data.kind=coss", ["kind = 'coss'", "did you mean 'cos'"]),
    ("data.kind=blackscholes", ["did you mean 'black-scholes'"]),
    ("data.kind=File", ["did you mean 'file'"]),
    ("train.device=cuda:x", ["device = 'cuda:x'", "cuda:N"]),
    ("train.device=gpu", ["device = 'gpu'"]),
    ("train.device=cpus", ["did you mean 'cpu'"]),
    ("train.device='cuda:'", ["device = 'cuda:'"]),
    ("tune.storage=sqlit", ["storage = 'sqlit'", "did you mean 'sqlite'"]),
    ("tune.storage='redis://host/db'", ["storage = 'redis://host/db'"]),
    ("tune.storage='postgresql'", ["storage = 'postgresql'"]),
    ("tune.metric=mse", ["did you mean 'val_mse'"]),
    ("model.activation=Tanh", ["did you mean 'tanh'"]),
])
def test_enumerated_names_are_checked_at_load(item, fragments):
    msg = refused(item)
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_storage_password_is_masked():
    msg = refused("tune.storage='redis://me:secret@host/db'")
    assert "secret" not in msg and "me:***@" in msg


@pytest.mark.parametrize("item", ["train.device=cuda:0", "train.device=cuda:12", "train.device=mps",
                                  "tune.storage=memory", "tune.storage='sqlite:///x.db'",
                                  "tune.storage='postgresql+psycopg://u:p@h/db'",
                                  "early_stopping.monitor=train_loss", "data.kind=heston"])
def test_valid_names_pass(item):
    load_config(None, [item])


def test_missing_val_loss_at_run_time_is_a_config_error(cli, tmp_path):
    res = cli("fit", "-q", "-o", str(tmp_path / "r"), "--set", "data.split=[1.0, 0.0, 0.0]",
              "--set", "early_stopping.enabled=true", "--set", "train.batch_size=8", "--set", "data.n=40",
              "--set", "train.epochs=2", "--set", "run.plots=false", "--set", "train.progress=false")
    assert_one_line_error(res, "[early_stopping] monitor = 'val_loss' is not logged", "train_loss")


def test_monitor_error_is_an_nnfin_error_and_a_key_error():
    from nnfin.train.callbacks import EarlyStopping

    with pytest.raises(NNFinError) as info:
        EarlyStopping("val_loss").check(1, {"train_loss": 1.0})
    assert isinstance(info.value, KeyError) and str(info.value).startswith("[early_stopping] monitor")


# ----------------------------------------------------------------------------- union messages


def test_union_field_errors_name_the_field_not_the_type():
    msg = refused("data.target=[[1]]")
    assert msg.startswith("[data] target = [[1]]:")
    msg = refused("data.target=5")
    assert msg.startswith("[data] target = 5:")


def test_finite_and_math_inf_from_python():
    with pytest.raises(ConfigError, match=r"\[optim\] lr = inf: must be a finite number"):
        load_config({"optim": {"lr": math.inf}})


def test_unknown_tune_key_lists_the_tune_keys():
    msg = refused("tune.stratgy=grid")
    assert "did you mean 'strategy'" in msg and "(known: strategy, trials," in msg


def test_free_form_tables_hold_only_toml_values():
    import datetime as dt

    for raw, where in [({"data": {"options": {"a": [None]}}}, "a[0] = None"),
                       ({"data": {"options": {"a": {"b": dt.time(1)}}}}, "a.b = datetime.time(1, 0)"),
                       ({"tune": {"space": {"optim.lr": [math.inf]}}}, "optim.lr[0] = inf")]:
        with pytest.raises(ConfigError, match=re.escape(where)):
            load_config(raw)


def test_non_finite_csv_value_is_shown_as_a_plain_float(tmp_path):
    from nnfin.data import build_data

    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n2,\n3,4\n")
    with pytest.raises(NNFinError, match=r"at row 1 \(nan\)$"):
        build_data(load_config({"data": {"kind": "file", "path": str(path)}}).data)


def test_column_names_with_line_breaks_stay_on_one_line(tmp_path):
    from nnfin.data import build_data

    path = tmp_path / "d.csv"
    path.write_bytes(b'"x\ny",a\n1,2\n3,4\n')
    with pytest.raises(NNFinError) as info:
        build_data(load_config({"data": {"kind": "file", "path": str(path), "features": ["x"]}}).data)
    assert "\n" not in str(info.value) and "'x\\ny'" in str(info.value)
