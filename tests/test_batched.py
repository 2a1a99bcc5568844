"""The batched engine against references: autograd, torch.optim and nnfin's single-model loop."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnfin.config import OptimConfig, load_config
from nnfin.data import data_from_indices
from nnfin.models import build_model
from nnfin.train.callbacks import EarlyStopping
from nnfin.train.loop import Trainer
from nnfin.train.sampler import BatchSampler
from nnfin.train.stack import functional as fn
from nnfin.train.stack.batched import plan_groups, train_batched, unsupported_reason
from nnfin.train.stack.engine import Job, StackTrainer, epoch_order, train_group
from nnfin.train.stack.functional import StackLayout, backward, flat_grads, forward, loss_and_grad
from nnfin.train.stack.optimizers import StackedOptimizer

ACTS = ["sigmoid", "tanh", "relu", "elu", "softplus", "gelu", "silu"]
TOL = {"float32": 1e-5, "float64": 1e-12}


def cos_data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-math.pi / 2, 3 * math.pi / 2, n).reshape(-1, 1)
    return x, np.cos(x)


def fold(x, y, train, val, dtype="float32"):
    return data_from_indices(x, y, np.asarray(train), np.asarray(val), np.arange(0),
                             features=["x"], targets=["y"], dtype=dtype)


def config(*overrides: str, dtype: str = "float32"):
    return load_config(None, ["train.epochs=4", "train.batch_size=32", "train.progress=false",
                              "train.device=cpu", f"train.dtype={dtype}", *overrides])


def single(cfg, data):
    """``(initial model, trained model, state)`` from nnfin's Trainer, seeded as nnfin.fit."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=1, out_dim=1).to(getattr(torch, cfg.train.dtype))
    initial = copy.deepcopy(model)
    es = cfg.early_stopping
    callbacks = [EarlyStopping(es.monitor, patience=es.patience, min_delta=es.min_delta,
                               restore_best=es.restore_best)] if es.enabled else []
    state = Trainer(model, data, cfg, callbacks=callbacks).fit()
    return initial, model, state


def assert_same(result, model, state, tol):
    assert result.status == state.status
    assert result.epochs == len(state.history) and result.steps == state.step
    for mine, ref in zip(result.history, state.history, strict=True):
        for key in ("train_loss", "val_loss"):
            assert mine[key] == pytest.approx(ref[key], rel=tol, abs=tol), key
    ref = model.state_dict()
    for key, value in result.state_dict.items():
        torch.testing.assert_close(value, ref[key], rtol=tol, atol=tol)


# ----------------------------------------------------------------------- functional core


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", ["mse", "sse", "mae", "huber"])
def test_hand_written_backward_equals_autograd(act, loss):
    torch.manual_seed(0)
    layout = StackLayout([2, 5, 7, 3])
    theta = torch.randn(4, layout.n_params, dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(4, 9, 2, dtype=torch.float64), torch.randn(4, 9, 3, dtype=torch.float64)
    valid = torch.rand(4, 9) > 0.3
    out, cache = forward(layout.views(theta), x, act)
    value, g = loss_and_grad(out, y, loss, count=valid.sum(1).double(), valid=valid,
                             huber_delta=0.7)
    mine = flat_grads(backward(layout.views(theta), cache, g, act))
    (ref,) = torch.autograd.grad(value.sum(), theta)
    torch.testing.assert_close(mine, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("widths", [[1, 5, 7, 1], [3, 4, 2], [2, 6, 6, 6, 1]])
def test_training_step_with_biases_in_the_products_equals_autograd(act, widths):
    """forward_step/backward_step (feature-major batches, biases as the last weight row,
    [h; 1] activations): the same outputs as the plain forward, the gradients autograd finds,
    and for every loss on a batch with padded rows the losses of loss_and_grad."""
    torch.manual_seed(1)
    layout = StackLayout(widths)
    m, b = 3, 11
    theta = torch.randn(m, layout.n_params, dtype=torch.float64, requires_grad=True)
    x = torch.randn(m, b, widths[0], dtype=torch.float64)
    y = torch.randn(m, b, widths[-1], dtype=torch.float64)
    valid = torch.arange(b).unsqueeze(0) < torch.tensor([[b], [7], [1]])
    count = valid.sum(1).double()
    buffers = fn.StepBuffers(layout, b, theta.detach())
    x1 = torch.cat([x, torch.ones(m, b, 1, dtype=torch.float64)], 2).transpose(1, 2)
    out, cache = fn.forward_step(buffers, x1.contiguous(), act)
    ref_out, _ = forward(layout.views(theta), x, act, keep=False)
    torch.testing.assert_close(out.transpose(1, 2), ref_out.detach(), rtol=1e-13, atol=1e-13)
    errors, _ = fn.forward_step(buffers, x1.contiguous(), act, out=torch.empty_like(out),
                                minus_target=-y.transpose(1, 2))  # pred - y in the last product
    torch.testing.assert_close(errors, out - y.transpose(1, 2), rtol=1e-13, atol=1e-13)
    for loss in ("mse", "sse", "mae", "huber"):
        diff = torch.empty_like(out)
        for counted in (count, None):  # counted: per-network means; None: full batches
            rows = valid if counted is not None else None
            g, scale = fn.errors_grad(torch.sub(out, y.transpose(1, 2), out=diff), loss,
                                      count=counted, valid=rows, huber_delta=0.7,
                                      feature_major=True)
            mine = flat_grads(fn.backward_step(buffers, cache, g, act, scale))
            value, _ = loss_and_grad(ref_out, y, loss, count=counted, valid=rows, huber_delta=0.7)
            (ref,) = torch.autograd.grad(value.sum(), theta, retain_graph=True)
            torch.testing.assert_close(mine, ref, rtol=1e-13, atol=1e-13)
        g, scale = fn.errors_grad(torch.sub(out, y.transpose(1, 2), out=diff), loss, count=count,
                                  valid=valid, huber_delta=0.7, feature_major=True)
        mine = flat_grads(fn.backward_step(buffers, cache, g, act, scale))
        value, _ = loss_and_grad(ref_out, y, loss, count=count, valid=valid, huber_delta=0.7)
        (ref,) = torch.autograd.grad(value.sum(), theta, retain_graph=True)
        torch.testing.assert_close(mine, ref, rtol=1e-13, atol=1e-13)
        losses = fn.step_losses(diff, loss, count=count, huber_delta=0.7, feature_major=True)
        torch.testing.assert_close(losses, value.detach(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("loss,fn", [("mse", F.mse_loss), ("mae", F.l1_loss),
                                     ("huber", F.huber_loss)])
def test_masked_loss_is_the_mean_over_real_rows(loss, fn):
    pred, target = torch.randn(3, 8, 2, dtype=torch.float64), torch.randn(3, 8, 2, dtype=torch.float64)
    counts = [8, 5, 1]
    valid = torch.arange(8).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)
    value, _ = loss_and_grad(pred, target, loss, count=torch.tensor(counts).double(), valid=valid)
    for m, c in enumerate(counts):
        assert float(value[m]) == pytest.approx(float(fn(pred[m, :c], target[m, :c])), rel=1e-14)


def test_penalty_gradient_is_the_gradient_of_the_lecture_penalty():
    theta = torch.randn(3, 20, dtype=torch.float64, requires_grad=True)
    l1, l2 = torch.rand(3, 20, dtype=torch.float64), torch.rand(3, 1, dtype=torch.float64)
    (ref,) = torch.autograd.grad(fn.penalty_value(theta, l1, l2).sum(), theta)
    mine = fn.add_penalty(torch.zeros_like(theta), theta.detach(), l1, l2)
    torch.testing.assert_close(mine, ref, rtol=1e-15, atol=0)


def test_width_mask_marks_the_small_network_inside_the_layout():
    mask = StackLayout([1, 4, 4, 1]).width_mask([1, 2, 3, 1]).bool()
    assert int(mask.sum()) == StackLayout([1, 2, 3, 1]).n_params


@pytest.mark.parametrize("rows", [[160, 160, 160], [160, 150, 160]])
def test_epoch_batches_are_each_networks_own_sampler_batches(rows):
    """Three networks with one seed: the stack's batch index of an epoch holds, for each
    network, its own sampler's batches (shifted to its fold's rows in the stacked data), with
    a short or missing last batch padded and counted."""
    x, y = cos_data(400)
    datas = [fold(x, y, range(k, k + n), range(300, 340)) for k, n in zip((0, 80, 160), rows,
                                                                          strict=True)]
    cfg = config()
    jobs = [Job(cfg, d, build_model(cfg.model, in_dim=1, out_dim=1)) for d in datas]
    stack = StackTrainer(jobs)
    index, counts = stack._epoch_batches()
    offsets = np.cumsum([0, *rows[:-1]])
    for m, (n, offset) in enumerate(zip(rows, offsets, strict=True)):
        ref = list(BatchSampler(n, 32, "shuffle", seed=cfg.train.seed).epoch())
        assert counts[:, m].tolist() == [len(r) for r in ref] + [0] * (len(counts) - len(ref))
        for s, batch in enumerate(ref):
            assert torch.equal(index[s, m, :len(batch)], batch + int(offset))


@pytest.mark.parametrize("mode", ["shuffle", "choice", "full"])
def test_epoch_order_draws_what_the_sampler_draws(mode):
    a, b = BatchSampler(103, 10, mode, seed=3), BatchSampler(103, 10, mode, seed=3)
    for _ in range(3):
        ref = torch.cat([t if t is not None else torch.arange(103) for t in a.epoch()])
        assert torch.equal(epoch_order(b), ref)


# -------------------------------------------------------------------------- optimizers

OPTIMS = [("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
          ("adam", {}), ("adamw", {}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.5})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,extra", OPTIMS)
def test_updates_are_torch_optim_bit_for_bit(name, extra, dtype):
    torch.manual_seed(0)
    lrs, decays = [1e-2, 3e-3, 1e-1], [0.0, 0.05, 0.01]
    theta = torch.randn(3, 50, dtype=dtype)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[name]
    params = [torch.nn.Parameter(row.clone()) for row in theta]
    refs = [cls([p], lr=lr, weight_decay=wd, foreach=False, **extra)
            for p, lr, wd in zip(params, lrs, decays, strict=True)]
    opt = StackedOptimizer([OptimConfig(name=name, lr=lr, weight_decay=wd, **extra)
                            for lr, wd in zip(lrs, decays, strict=True)], theta, fused=False)
    for _ in range(6):
        grad = torch.randn(3, 50, dtype=dtype)
        for p, ref, g in zip(params, refs, grad, strict=True):
            p.grad = g.clone()
            ref.step()
        theta = opt.step(theta, grad, active=None)
    assert torch.equal(theta, torch.stack([p.detach() for p in params]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_rows_follow_torch_fused_adam(name, dtype):
    """The fused path (per-network rates and decays, several betas) against torch.optim's
    fused Adam/AdamW on each network alone, and against the functional path: networks 0-1 and
    3-4 are blocks of one kernel call each, network 5 shares 0-1's call from another row."""
    torch.manual_seed(0)
    lrs, decays = [1e-2, 1e-2, 1e-1, 3e-3, 3e-3, 1e-2], [0.0, 0.0, 0.01, 0.05, 0.05, 0.0]
    betas = [(0.9, 0.999), (0.9, 0.999), (0.8, 0.99), (0.9, 0.999), (0.9, 0.999), (0.9, 0.999)]
    theta = torch.randn(6, 70, dtype=dtype)
    start = theta.clone()
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    params = [torch.nn.Parameter(row.clone()) for row in theta]
    refs = [cls([p], lr=lr, weight_decay=wd, betas=b, fused=True)
            for p, lr, wd, b in zip(params, lrs, decays, betas, strict=True)]
    cfgs = [OptimConfig(name=name, lr=lr, weight_decay=wd, betas=b)
            for lr, wd, b in zip(lrs, decays, betas, strict=True)]
    fused, plain = StackedOptimizer(cfgs, theta, fused=True), StackedOptimizer(cfgs, theta, fused=False)
    assert fused.fused and not plain.fused
    assert [m.tolist() for m in fused._kernel_groups.values()] == [[0, 1, 5], [2], [3, 4]]
    other = theta.clone()
    # 8 steps of all networks (one step count), 2 with networks 1 and 4 frozen, then 3 of all
    # networks at unequal step counts: every path of the fused update
    frozen = np.array([True, False, True, True, False, True])
    for active in [None] * 8 + [frozen] * 2 + [None] * 3:
        grad = torch.randn(6, 70, dtype=dtype)
        for i, (p, ref, g) in enumerate(zip(params, refs, grad, strict=True)):
            if active is None or active[i]:
                p.grad = g.clone()
                ref.step()
        fused.step(theta, grad.clone(), active=active)
        plain.step(other, grad.clone(), active=active)
    assert fused.steps.tolist() == [13, 11, 13, 13, 11, 13]
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    expected = torch.stack([p.detach() for p in params])
    torch.testing.assert_close(theta, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(other, expected, rtol=tol, atol=tol)
    assert not torch.equal(theta, start)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_inactive_networks_keep_parameters_and_state(name, fused):
    theta = torch.ones(3, 4)
    start = theta.clone()
    opt = StackedOptimizer([OptimConfig(name=name, lr=0.1, weight_decay=0.1, momentum=0.5)] * 3,
                           theta, fused=fused)
    active = np.array([True, False, True])
    opt.step(theta, torch.ones(3, 4), active=active)
    assert torch.equal(theta[1], start[1]) and not torch.equal(theta[0], start[0])
    assert torch.equal(theta[0], theta[2])
    assert opt.steps.tolist() == [1, 0, 1]
    for value in opt.state.values():
        if value is not None:
            assert float(value[1].abs().sum()) == 0 and float(value[0].abs().sum()) > 0


# -------------------------------------------------------- equivalence with the Trainer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_network_follows_its_single_model_trajectory(dtype):
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240), dtype)
    cfgs = [config("optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9", dtype=dtype),
            config("optim.name=sgd", "optim.lr=0.05", "penalty.l2=1e-3", "train.seed=1",
                   dtype=dtype),
            config("optim.name=adam", "optim.lr=0.01", dtype=dtype),
            config("optim.name=adamw", "optim.lr=0.02", "penalty.l2=1e-3", "penalty.l1=1e-4",
                   "penalty.include_bias=false", "optim.weight_decay=0.01", "train.seed=2",
                   dtype=dtype)]
    runs = [single(cfg, data) for cfg in cfgs]
    sgd = train_group([Job(cfgs[i], data, runs[i][0]) for i in (0, 1)], return_weights=True)
    adam = train_group([Job(cfgs[i], data, runs[i][0]) for i in (2, 3)], return_weights=True)
    for result, (_, model, state) in zip(sgd + adam, runs, strict=True):
        assert_same(result, model, state, TOL[dtype])


def test_padded_narrow_network_equals_the_unpadded_one():
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240))
    narrow, wide = config("model.neurons=[6,6]"), config("model.neurons=[32,32]", "train.seed=5")
    (init_n, model_n, state_n), (init_w, model_w, state_w) = single(narrow, data), single(wide, data)
    results = train_group([Job(narrow, data, init_n), Job(wide, data, init_w)], return_weights=True)
    assert_same(results[0], model_n, state_n, TOL["float32"])
    assert_same(results[1], model_w, state_w, TOL["float32"])


def test_padding_stays_exactly_zero():
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240))
    jobs = [Job(config(f"model.neurons=[{w},{w}]", "penalty.l1=1e-3", "optim.weight_decay=0.1",
                       "optim.name=adamw"), data, build_model(load_config(
                           None, [f"model.neurons=[{w},{w}]"]).model, in_dim=1, out_dim=1))
            for w in (3, 8)]
    stack = StackTrainer(jobs)
    stack._epoch_steps()
    assert stack.wmask is not None
    assert torch.equal(stack.theta * (1 - stack.wmask), torch.zeros_like(stack.theta))


def test_folds_of_unequal_size_keep_their_own_steps():
    x, y = cos_data(300)
    folds = [fold(x, y, range(0, 170), range(170, 300)), fold(x, y, range(100, 229), range(0, 100))]
    cfg = config("optim.name=adam", "optim.lr=0.01", "train.batch_size=48")
    runs = [single(cfg, d) for d in folds]
    results = train_group([Job(cfg, d, r[0]) for d, r in zip(folds, runs, strict=True)],
                          return_weights=True)
    assert [r.steps for r in results] == [4 * 4, 4 * 3]
    for result, (_, model, state) in zip(results, runs, strict=True):
        assert_same(result, model, state, TOL["float32"])


def test_early_stopping_per_network():
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240), "float64")
    stop = config("optim.name=sgd", "optim.lr=3.0", "train.epochs=30", "early_stopping.enabled=true",
                  "early_stopping.patience=2", "early_stopping.restore_best=false", dtype="float64")
    restore = config("optim.name=sgd", "optim.lr=3.0", "train.epochs=30", "train.seed=3",
                     "early_stopping.enabled=true", "early_stopping.patience=2", dtype="float64")
    go_on = config("optim.name=sgd", "optim.lr=0.01", "train.epochs=30", dtype="float64")
    runs = [single(cfg, data) for cfg in (stop, restore, go_on)]
    assert runs[0][2].status == "early-stopped" and runs[0][2].epoch < 30
    results = train_group([Job(c, data, r[0]) for c, r in zip((stop, restore, go_on), runs,
                                                              strict=True)], return_weights=True)
    for result, (_, model, state) in zip(results, runs, strict=True):
        assert_same(result, model, state, TOL["float64"])  # frozen at its stop: final weights
    assert results[0].status == "early-stopped" and results[2].epochs == 30
    assert results[1].restored_epoch == results[1].best_epoch == runs[1][2].restored_epoch


def test_diverging_network_stops_alone():
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240))
    bad, good = config("optim.name=sgd", "optim.lr=1e30"), config("optim.name=sgd", "optim.lr=0.1")
    runs = [single(bad, data), single(good, data)]
    results = train_group([Job(bad, data, runs[0][0]), Job(good, data, runs[1][0])],
                          return_weights=True)
    assert runs[0][2].status == results[0].status == "diverged"
    assert results[0].stop_reason == runs[0][2].stop_reason
    assert_same(results[1], runs[1][1], runs[1][2], TOL["float32"])


def test_iterations_and_full_batches():
    x, y = cos_data()
    data = fold(x, y, range(180), range(180, 240))
    cfgs = [config("train.iterations=10"), config("train.sampling=full", "train.iterations=3"),
            config("train.sampling=choice", "train.batch_size=40", "train.seed=4")]
    for cfg in cfgs:
        run = single(cfg, data)
        (result,) = train_group([Job(cfg, data, run[0])], return_weights=True)
        assert_same(result, run[1], run[2], TOL["float32"])


def test_networks_without_validation_rows_share_a_stack():
    x, y = cos_data()
    with_val, without = fold(x, y, range(180), range(180, 240)), fold(x, y, range(200), np.arange(0))
    cfg = config()
    runs = [single(cfg, with_val), single(cfg, without)]
    results = train_group([Job(cfg, with_val, runs[0][0]), Job(cfg, without, runs[1][0])],
                          return_weights=True)
    assert "val_loss" not in results[1].history[0] and math.isnan(results[1].best_val_loss)
    assert results[1].best_epoch == int(np.argmin([h["train_loss"] for h in runs[1][2].history])) + 1
    torch.testing.assert_close(results[1].state_dict, runs[1][1].state_dict(), rtol=1e-5, atol=1e-5)
    assert_same(results[0], runs[0][1], runs[0][2], TOL["float32"])


# ------------------------------------------------------------------------- public API


def test_train_batched_matches_per_fold_single_runs_and_plans_within_budget():
    x, y = cos_data(200)
    folds = [(np.arange(0, 150), np.arange(150, 200)), (np.arange(50, 200), np.arange(0, 50))]
    cands = [config(f"model.neurons=[{w},{w}]", f"optim.lr={lr}") for w in (4, 12) for lr in (1e-2, 3e-2)]
    cands.append(config("optim.name=lbfgs"))
    run = train_batched(cands, x, y, folds=folds, epochs=3, return_weights=True)
    small = train_batched(cands, x, y, folds=folds, epochs=3, max_bytes=60_000, pad_widths=True)
    assert len(small.plan.groups) > len(run.plan.groups)
    assert "group 0" in small.plan.describe() and "lbfgs" in run.plan.describe()
    assert 4 in run.unsupported and run.results[4] == [None, None]
    for c in range(4):
        for f, (tr, va) in enumerate(folds):
            _, model, state = single(run.configs[c], fold(x, y, tr, va))
            assert_same(run.result(c, f), model, state, TOL["float32"])
            for mine, ref in zip(small.result(c, f).history, run.result(c, f).history, strict=True):
                assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


@pytest.mark.parametrize("override,fragment", [
    ("optim.name=lbfgs", "lbfgs"), ("model.kind=polynomial", "polynomial"),
    ("train.distributed=true", "distributed"), ("early_stopping.monitor=time", "monitor")])
def test_unsupported_configs_say_why(override, fragment):
    cfg = config(override, "early_stopping.enabled=true")
    assert fragment in unsupported_reason(cfg)
    assert unsupported_reason(config()) is None


def test_plan_pads_only_when_it_pays():
    cands = [config(f"model.neurons=[{w},{w}]") for w in (6, 8, 128)]
    auto = plan_groups(cands, n_folds=5)
    assert [g.widths for g in auto.groups] == [[8, 8], [128, 128]]
    assert len(plan_groups(cands, n_folds=5, pad_widths=True).groups) == 1
    assert len(plan_groups(cands, n_folds=5, pad_widths=False).groups) == 3
    tiny = plan_groups(cands, n_folds=5, max_bytes=1)
    assert len(tiny.groups) == 15 and all(len(g.members) == 1 for g in tiny.groups)
