import math
import os
import signal

import pytest
import torch

import nnfin
from nnfin.config import PenaltyConfig, load_config
from nnfin.data import build_data
from nnfin.models import build_model
from nnfin.train.callbacks import Callback
from nnfin.train.loop import Trainer
from nnfin.train.losses import make_loss, make_penalty
from nnfin.train.sampler import BatchSampler


def make_trainer(overrides, callbacks=()):
    cfg = load_config(None, ["train.progress=false", "train.device=cpu", *overrides])
    torch.manual_seed(cfg.train.seed)
    data = build_data(cfg.data, dtype=cfg.train.dtype)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=data.in_dim, out_dim=data.out_dim).to(
        getattr(torch, cfg.train.dtype))
    return Trainer(model, data, cfg, callbacks=list(callbacks))


class Recorder(Callback):
    def __init__(self):
        self.params = []

    def on_batch_end(self, trainer):
        self.params.append([p.detach().clone() for p in trainer.model.parameters()])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gd_is_plain_sgd(dtype):
    runs = []
    for name in ("gd", "sgd"):
        rec = Recorder()
        t = make_trainer([f"optim.name={name}", "optim.lr=0.1", "train.epochs=3", "data.n=300",
                          f"train.dtype={dtype}"], [rec])
        t.fit()
        runs.append(rec.params)
    assert len(runs[0]) == len(runs[1]) > 10
    for step_gd, step_sgd in zip(*runs, strict=True):
        for a, b in zip(step_gd, step_sgd, strict=True):
            # float64: the same to rounding; float32: fused kernels may round the last bit apart
            tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-13, "atol": 0}
            torch.testing.assert_close(a, b, **tol)


def test_iterations_counts_steps_and_partial_epoch():
    t = make_trainer(["train.iterations=50", "train.batch_size=64", "data.n=1000"])
    state = t.fit()
    assert state.step == 50
    assert t.sampler.steps_per_epoch == 11  # ceil(700 / 64)
    assert state.epoch == 5 and len(state.history) == 5


def test_choice_sampling_is_without_replacement_and_fresh_each_step():
    s = BatchSampler(100, 30, "choice", seed=0)
    batches = list(s.epoch())
    assert len(batches) == 3
    for b in batches:
        assert len(torch.unique(b)) == 30 and int(b.min()) >= 0 and int(b.max()) < 100
    counts = torch.zeros(100)
    for _ in range(400):
        for b in s.epoch():
            counts[b] += 1
    # each index is drawn with probability 30/100 per step: 1200 steps -> mean 360
    assert abs(float(counts.mean()) - 360) < 1e-9
    assert float(counts.std()) < 60  # binomial std ~ 15.9; a biased sampler would be far off


def test_shuffle_covers_every_row_once_per_epoch():
    s = BatchSampler(103, 10, "shuffle", seed=1)
    batches = list(s.epoch())
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert torch.equal(torch.sort(torch.cat(batches)).values, torch.arange(103))
    again = torch.cat(list(s.epoch()))
    assert not torch.equal(torch.cat(batches), again)


def test_losses_match_their_formulas():
    p, y = torch.tensor([[1.0], [3.0], [-2.0]]), torch.tensor([[0.0], [1.0], [0.5]])
    d = p - y
    assert float(make_loss("sse")(p, y)) == pytest.approx(float((d**2).sum()))
    assert float(make_loss("mse")(p, y)) == pytest.approx(float((d**2).mean()))
    assert float(make_loss("mae")(p, y)) == pytest.approx(float(d.abs().mean()))
    huber = torch.where(d.abs() <= 1, 0.5 * d**2, d.abs() - 0.5).mean()
    assert float(make_loss("huber", huber_delta=1.0)(p, y)) == pytest.approx(float(huber))


@pytest.mark.parametrize("include_bias", [True, False])
def test_penalty_gradient_is_analytic(include_bias):
    torch.manual_seed(0)
    model = build_model(load_config(None).model, in_dim=1, out_dim=1).double()
    pen = make_penalty(PenaltyConfig(l1=0.01, l2=0.1, include_bias=include_bias), model)
    pen().backward()
    for name, p in model.named_parameters():
        is_bias = name.endswith("bias")
        expected = torch.zeros_like(p) if (is_bias and not include_bias) else \
            0.01 * torch.sign(p) + 0.1 * 2 * p
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(grad, expected.detach())


def test_penalty_enters_the_backward_pass():
    """One gd step with L2 differs from one without by exactly lr * 2 * lambda * w."""
    base = ["optim.name=gd", "optim.lr=0.1", "train.iterations=1", "train.sampling=full",
            "train.dtype=float64", "data.n=200"]
    plain, reg = make_trainer(base), make_trainer([*base, "penalty.l2=0.5"])
    w0 = [p.detach().clone() for p in reg.model.parameters()]
    plain.fit()
    reg.fit()
    for p_plain, p_reg, w in zip(plain.model.parameters(), reg.model.parameters(), w0, strict=True):
        torch.testing.assert_close(p_plain - p_reg, 0.1 * 2 * 0.5 * w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("schedule", "extra", "check"), [
    ("step", ["optim.step_size=2", "optim.gamma=0.5"], lambda lrs: lrs[:4] == [0.1, 0.1, 0.05, 0.05]),
    ("exponential", ["optim.gamma=0.9"], lambda lrs: math.isclose(lrs[3], 0.1 * 0.9**3)),
    ("cosine", ["optim.min_lr=0.0"], lambda lrs: lrs[0] == 0.1 and lrs[-1] < 0.01),
    ("onecycle", ["optim.max_lr=1.0"], lambda lrs: max(lrs) > 0.5 and lrs[-1] < 0.01),
    ("plateau", ["optim.patience=0", "optim.factor=0.5"], lambda lrs: min(lrs) <= 0.1),
])
def test_schedules(schedule, extra, check):
    t = make_trainer([f"optim.schedule={schedule}", "optim.lr=0.1", "optim.name=sgd",
                      "train.epochs=8", "data.n=300", *extra])
    t.fit()
    lrs = [row["lr"] for row in t.state.history]
    assert check(lrs), lrs


def test_lbfgs_closure_trains():
    t = make_trainer(["optim.name=lbfgs", "optim.lr=1", "train.sampling=full", "train.epochs=20",
                      "model.activation=tanh", "train.dtype=float64", "data.n=300"])
    state = t.fit()
    assert state.history[-1]["train_loss"] < 1e-3 * state.history[0]["train_loss"]


def test_non_finite_loss_stops_at_the_step_with_lr():
    t = make_trainer(["optim.name=sgd", "optim.lr=1e6", "train.epochs=5", "data.n=300"])
    state = t.fit()
    assert state.status == "diverged"
    assert "step" in state.stop_reason and "lr = 1e+06" in state.stop_reason
    step = int(state.stop_reason.split("step ")[1].split(" ")[0])
    assert step == state.step  # stopped at the step where the loss went bad


def test_callback_can_stop_and_hooks_run_in_order():
    events = []

    class Spy(Callback):
        def on_train_begin(self, trainer):
            events.append("begin")

        def on_epoch_end(self, trainer, logs):
            events.append(f"epoch{logs['epoch']}")
            if logs["epoch"] == 2:
                trainer.stop("enough")

        def on_train_end(self, trainer):
            events.append("end")

    state = make_trainer(["train.epochs=10", "data.n=200"], [Spy()]).fit()
    assert events == ["begin", "epoch1", "epoch2", "end"]
    assert state.status == "early-stopped" and state.stop_reason == "enough"


def test_early_stopping_restores_best_weights():
    t = make_trainer(["train.epochs=300", "data.n=300", "optim.lr=0.05", "data.noise=0.3",
                      "model.neurons=[32, 32]", "early_stopping.enabled=true"])
    from nnfin.train.callbacks import EarlyStopping

    es = EarlyStopping(patience=5)
    t.callbacks.append(es)
    state = t.fit()
    assert state.status == "early-stopped" and state.epoch < 300
    assert state.restored_epoch == es.best_epoch
    assert t.evaluate("val") == pytest.approx(es.best, rel=1e-6)
    val = [row["val_loss"] for row in state.history]
    assert es.best == min(val)


def test_ctrl_c_stops_cleanly_inside_an_epoch():
    class Interrupt(Callback):
        def on_batch_end(self, trainer):
            if trainer.state.step == 7:
                os.kill(os.getpid(), signal.SIGINT)

    t = make_trainer(["train.epochs=5", "data.n=1000"], [Interrupt()])
    state = t.fit()
    assert state.status == "interrupted"
    assert state.step == 7 and t.step_in_epoch == 7 and state.epoch == 0


def test_fit_returns_run_with_predict_in_data_units(tmp_path):
    run = nnfin.fit(overrides=["train.epochs=200", "train.device=cpu", "data.n=2000",
                               f"run.dir={tmp_path / 'r'}"])
    assert run.metrics["status"] == "finished" and run.metrics["test"]["r2"] > 0.99
    x = torch.linspace(-1.5, 4.5, 50, dtype=torch.float64)
    pred = run.predict(x.numpy())
    assert pred.shape == (50, 1)
    assert abs(pred[:, 0] - torch.cos(x).numpy()).max() < 0.1
    assert list(run.history.columns[:4]) == ["epoch", "step", "train_loss", "lr"]


@pytest.mark.parametrize("name", ["gd", "sgd", "rmsprop"])
def test_onecycle_with_optimizers_without_momentum(name):
    """Regression: OneCycleLR must not cycle momentum an optimizer does not have."""
    t = make_trainer([f"optim.name={name}", "optim.schedule=onecycle", "train.epochs=2", "data.n=200"])
    assert t.fit().status == "finished"
