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


# ----------------------------------------------------------- the one loop drives the stack


class Recorder:
    """Every hook the loop calls, in order, with the network of each epoch log."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[tuple] = []
        self.batches = 0
        self.stop_at = stop_at

    def on_train_begin(self, trainer):
        self.calls.append(("begin",))

    def on_epoch_begin(self, trainer):
        self.calls.append(("epoch_begin", trainer.state.epoch))

    def on_epoch_end(self, trainer, logs):
        self.calls.append(("epoch_end", int(logs["epoch"]), logs.get("network"),
                           logs["train_loss"]))
        if self.stop_at is not None and logs["epoch"] >= self.stop_at:
            trainer.stop("enough", "early-stopped")

    def on_batch_end(self, trainer):
        self.batches += 1

    def on_train_end(self, trainer):
        self.calls.append(("end", trainer.state.status))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _stack_jobs(epochs=(3, 5)):
    x, y, _ = cos_data(160)
    data = fold(x, y, range(128), range(128, 160), "float64")
    jobs = []
    for e in epochs:
        cfg = config("float64", f"train.epochs={e}")
        torch.manual_seed(cfg.train.seed)
        jobs.append(Job(cfg, data, build_model(cfg.model, in_dim=1, out_dim=1).double()))
    return jobs


def test_stack_callbacks_see_every_network_epoch_by_epoch():
    """The stack runs through the Loop: on_epoch_end once per network and epoch with its own
    logs (the history its JobResult keeps), on_batch_end after every batched step, and a
    network with fewer epochs stops being reported once it is done."""
    rec = Recorder()
    results = train_group(_stack_jobs((3, 5)), callbacks=[rec])
    assert rec.calls[0] == ("begin",) and rec.calls[-1] == ("end", "finished")
    ends = [c for c in rec.calls if c[0] == "epoch_end"]
    assert [(e, n) for _, e, n, _ in ends] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1),
                                               (4, 1), (5, 1)]
    for _, e, n, loss in ends:
        assert loss == results[n].history[e - 1]["train_loss"]
    assert rec.batches == 5 * 4  # 128 rows / 32 per batch, 5 epochs of the longer network
    assert [c[1] for c in rec.calls if c[0] == "epoch_begin"] == [0, 1, 2, 3, 4]


def test_a_callback_stops_every_network_still_training():
    rec = Recorder(stop_at=2)
    results = train_group(_stack_jobs((4, 6)), callbacks=[rec])
    assert [r.status for r in results] == ["early-stopped", "early-stopped"]
    assert [r.epochs for r in results] == [2, 2]
    assert rec.calls[-1] == ("end", "early-stopped")


def test_ctrl_c_stops_the_stack_at_the_epoch_end_and_is_raised_again():
    class Interrupt(Recorder):
        def on_epoch_end(self, trainer, logs):
            super().on_epoch_end(trainer, logs)
            trainer._interrupted = True  # what the SIGINT handler sets

    rec = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        train_group(_stack_jobs((4, 4)), callbacks=[rec])
    assert rec.calls[-1] == ("end", "interrupted")
    assert max(c[1] for c in rec.calls if c[0] == "epoch_end") == 1


def test_tensorboard_writes_each_network_of_a_stack(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nnfin.train.tensorboard import TensorBoardCallback

    train_group(_stack_jobs((2, 3)), callbacks=[TensorBoardCallback(tmp_path / "tb")])
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"network_0/train_loss", "network_1/train_loss", "network_1/lr"} <= set(tags)
    assert [e.step for e in acc.Scalars("network_1/train_loss")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("network_0/train_loss")] == [1, 2]
