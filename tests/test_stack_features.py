"""The stacked step with lr schedules and differential training: each network as the Trainer."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from conftest import FAST
from nnfin.config import load_config
from nnfin.data import data_from_indices
from nnfin.models import build_model
from nnfin.train.callbacks import EarlyStopping
from nnfin.train.folds import evaluate_candidates, make_folds
from nnfin.train.loop import Trainer
from nnfin.train.stack.batched import unsupported_reason
from nnfin.train.stack.engine import Job, train_group

REL = {"float64": 1e-10, "float32": 1e-5}
SCHEDULES = {
    "step": ["optim.schedule=step", "optim.step_size=2", "optim.gamma=0.3"],
    "exponential": ["optim.schedule=exponential", "optim.gamma=0.7"],
    "cosine": ["optim.schedule=cosine", "optim.min_lr=1e-4"],
    "onecycle": ["optim.schedule=onecycle", "optim.max_lr=0.05"],
    "plateau": ["optim.schedule=plateau", "optim.factor=0.5", "optim.patience=0"],
}


def cos_data(n: int = 200, seed: int = 0, inputs: int = 1):
    """``(x, y, dy/dx)``: y = cos(x0) (times 1 + x1 / 2 with a second input)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-math.pi / 2, 3 * math.pi / 2, (n, inputs))
    if inputs == 1:
        return x, np.cos(x), -np.sin(x)
    scale = 1 + x[:, 1:2] / 2
    d = np.concatenate([-np.sin(x[:, :1]) * scale, np.cos(x[:, :1]) / 2], axis=1)
    return x, np.cos(x[:, :1]) * scale, d


def fold(x, y, train, val, dtype, d=None, index=(0,)):
    """One fold's data; with ``d``, derivative targets of the inputs ``index``."""
    return data_from_indices(x, y, np.asarray(train), np.asarray(val), np.arange(0),
                             features=[f"x{i}" for i in range(x.shape[1])], targets=["y"],
                             dtype=dtype, dydx=None if d is None else d[:, list(index)],
                             dydx_index=list(index))


def config(dtype: str, *overrides: str):
    return load_config(None, ["train.epochs=5", "train.batch_size=32", "train.progress=false",
                              "train.device=cpu", f"train.dtype={dtype}", "optim.lr=0.01",
                              *overrides])


def single(cfg, data):
    """``(initial model, trained model, state)`` from the Trainer, seeded as nnfin.fit."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=data.in_dim, out_dim=1).to(getattr(torch, cfg.train.dtype))
    initial = copy.deepcopy(model)
    stopper = EarlyStopping.from_config(cfg.early_stopping)
    state = Trainer(model, data, cfg, callbacks=[stopper] if stopper else []).fit()
    return initial, model, state


def assert_same(result, model, state, rel):
    assert (result.status, result.epochs, result.steps) == (state.status, state.epoch, state.step)
    assert result.restored_epoch == state.restored_epoch
    for mine, ref in zip(result.history, state.history, strict=True):
        assert mine["lr"] == ref["lr"]  # the schedule's value itself, not a recomputation
        for key in ("train_loss", "val_loss"):
            if key in ref:
                assert mine[key] == pytest.approx(ref[key], rel=rel, abs=rel), key
    for key, value in result.state_dict.items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=rel, atol=rel)


def check(cfgs, datas, dtype):
    runs = [single(c, d) for c, d in zip(cfgs, datas, strict=True)]
    results = train_group([Job(c, d, r[0]) for c, d, r in zip(cfgs, datas, runs, strict=True)],
                          return_weights=True)
    for result, (_, model, state) in zip(results, runs, strict=True):
        assert_same(result, model, state, REL[dtype])
    return results, runs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_each_schedule_follows_the_trainer(name, dtype):
    x, y, _ = cos_data()
    # folds of unequal size (7 and 5 steps an epoch), two learning rates, adam and adamw
    datas = [fold(x, y, range(200), range(150, 200), dtype), fold(x, y, range(60, 200), range(60), dtype)]
    cfgs = [config(dtype, *SCHEDULES[name]), config(dtype, *SCHEDULES[name], "optim.lr=0.02",
                                                    "optim.name=adamw", "optim.weight_decay=0.1")]
    _, runs = check([cfgs[0], cfgs[0], cfgs[1]], [datas[0], datas[1], datas[0]], dtype)
    lrs = [h["lr"] for h in runs[0][2].history]
    assert len(set(lrs)) > 1 or name == "plateau"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mixed_schedules_rates_and_epochs_share_one_stack(dtype):
    x, y, _ = cos_data()
    data = fold(x, y, range(150), range(150, 200), dtype)
    sgd = ["optim.name=sgd", "optim.momentum=0.9"]
    cfgs = [config(dtype, *sgd, "optim.lr=0.05", *SCHEDULES["onecycle"]),
            config(dtype, *sgd, *SCHEDULES["cosine"], "train.epochs=3"),
            config(dtype, *sgd, *SCHEDULES["step"], "train.seed=3", "train.epochs=7"),
            config(dtype, *sgd, "optim.nesterov=true", *SCHEDULES["plateau"]),
            config(dtype, "optim.name=gd", "optim.lr=0.1", *SCHEDULES["exponential"]),
            config(dtype, *sgd, "train.iterations=17")]
    results, _ = check(cfgs, [data] * len(cfgs), dtype)
    assert [r.epochs for r in results] == [5, 3, 7, 5, 5, 4]


def test_plateau_with_early_stopping_per_network():
    x, y, _ = cos_data()
    data = fold(x, y, range(150), range(150, 200), "float64")
    es = ["early_stopping.enabled=true", "early_stopping.patience=3", "train.epochs=40"]
    cfgs = [config("float64", "optim.name=sgd", "optim.lr=3.0", *SCHEDULES["plateau"], *es),
            config("float64", "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0.9",
                   "optim.schedule=plateau", "optim.patience=1", *es,
                   "early_stopping.restore_best=false", "train.seed=2"),
            config("float64", "optim.name=sgd", "optim.lr=0.03", *SCHEDULES["plateau"],
                   "train.epochs=12")]
    results, runs = check(cfgs, [data] * 3, "float64")
    assert any(r.status == "early-stopped" for r in results)
    assert len({r.epochs for r in results}) > 1  # they leave the stack at different epochs
    assert len({h["lr"] for h in runs[0][2].history}) > 1  # the plateau cut the rate


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_differential_training_follows_the_trainer(dtype):
    x, y, d = cos_data(inputs=2)  # derivative targets of both inputs, or of the second
    datas = [fold(x, y, range(150), range(150, 200), dtype, d, (0, 1)),
             fold(x, y, range(50, 200), range(50), dtype, d, (0, 1)),
             fold(x, y, range(70), range(150, 200), dtype, d, (0, 1)),  # a short last batch
             fold(x, y, range(70), range(150, 200), dtype, d, (1,))]
    diff = ["data.derivatives={x0 = \"dydx\"}", "train.derivative_weight=0.5"]
    cfgs = [config(dtype, *diff, "model.activation=softplus", "model.neurons=[8, 8]"),
            config(dtype, *diff, "model.activation=softplus", "model.neurons=[5, 5]",
                   "train.derivative_weight=2.0", "penalty.l2=1e-3", *SCHEDULES["cosine"]),
            config(dtype, *diff, "model.activation=silu", "model.neurons=[8, 8]",
                   "train.loss=huber", "train.huber_delta=0.1", "train.seed=4")]
    check([cfgs[0], cfgs[1], cfgs[0]], datas[:3], dtype)
    # another loss, other inputs, an activation left to autograd's double backward: its own stack
    check([cfgs[2]], datas[3:], dtype)


def test_differential_cross_validation_is_batched_and_matches_one_by_one():
    cfgs = [load_config(None, [*FAST, "data.kind=sin", "data.derivatives={x = \"dydx\"}",
                               "train.dtype=float64", "train.epochs=4", "model.activation=tanh",
                               f"optim.lr={lr}", *SCHEDULES["cosine"]]) for lr in (0.01, 0.03)]
    folds = make_folds(cfgs[0], 3)
    batched = evaluate_candidates(cfgs, folds, batched=True)
    single_ = evaluate_candidates(cfgs, folds, batched=False)
    for a, b in zip(batched, single_, strict=True):
        assert (a.engine, b.engine) == ("batched", "trainer"), a.engine_note
        for fa, fb in zip(a.folds, b.folds, strict=True):
            assert fa.epochs == fb.epochs
            for key in ("mse", "mae", "r2", "loss"):
                assert fa.metrics[key] == pytest.approx(fb.metrics[key], rel=1e-10), key


@pytest.mark.parametrize("override,fragment", [
    ("optim.name=lbfgs", "lbfgs"), ("model.kind=polynomial", "polynomial")])
def test_only_what_cannot_be_stacked_is_refused(override, fragment):
    assert fragment in unsupported_reason(config("float32", override))
    for name in SCHEDULES:
        assert unsupported_reason(config("float32", *SCHEDULES[name])) is None
    assert unsupported_reason(config("float32", "data.derivatives={x = \"dydx\"}")) is None
