"""Learning-rate range test: schedule, smoothing, divergence stop, suggestions, untouched inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import FAST, assert_one_line_error
from nnfin.app.lr_find import lr_find, range_test, suggestions
from nnfin.config import OptimConfig, load_config
from nnfin.errors import ConfigError
from nnfin.train.optim import build_optimizer


def problem(seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    y = torch.cos(x)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)]
    return model, batches


def test_the_model_and_optimizer_passed_in_are_left_untouched():
    model, batches = problem()
    opt = build_optimizer(OptimConfig(name="adam", lr=0.01), model.parameters())
    F.mse_loss(model(batches[0][0]), batches[0][1]).backward()
    opt.step()  # the optimizer has state (Adam moments) to protect
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_opt = opt.state_dict()
    before_opt = {"state": {k: {n: t.clone() for n, t in s.items()} for k, s in before_opt["state"].items()},
                  "param_groups": [dict(g) for g in before_opt["param_groups"]]}
    rng = torch.get_rng_state()
    res = range_test(model, opt, batches, steps=60)
    assert len(res.lrs) > 10
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_model[k]), k
    after = opt.state_dict()
    for k, s in after["state"].items():
        for n, t in s.items():
            assert torch.equal(t, before_opt["state"][k][n]), (k, n)
    assert after["param_groups"] == before_opt["param_groups"]  # lr included
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters(), strict=True))
    assert torch.equal(torch.get_rng_state(), rng)


def test_learning_rates_grow_exponentially_from_start_to_end():
    model, batches = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = range_test(model, opt, batches, start=1e-6, end=1e-2, steps=50, diverge=1e9)
    assert len(res.lrs) == 50 and res.stop_reason == "ran all 50 steps"
    assert res.lrs[0] == pytest.approx(1e-6) and res.lrs[-1] == pytest.approx(1e-2)
    ratios = res.lrs[1:] / res.lrs[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_smoothing_is_a_bias_corrected_moving_average():
    model, batches = problem()
    res = range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, steps=40, diverge=1e9)
    avg, ref = 0.0, []
    for i, v in enumerate(res.losses):  # fastai's recorder: beta = 0.98
        avg = 0.98 * avg + 0.02 * v
        ref.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(res.smoothed, ref, rtol=1e-12)


def test_stops_when_the_loss_explodes():
    model, batches = problem()
    res = range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, start=1e-4, end=1e4,
                     steps=200)
    assert len(res.lrs) < 200
    assert "4x its best" in res.stop_reason or "loss became" in res.stop_reason
    finite = res.smoothed[np.isfinite(res.smoothed)]
    assert finite[-1] > 4 * finite.min() or "loss became" in res.stop_reason


def test_suggestions_on_a_known_curve():
    lrs = np.logspace(-7, 1, 100)
    loss = 2.0 - np.tanh(2 * (np.log10(lrs) + 3))  # steepest at 1e-3, lowest at the far end
    steep, low = suggestions(lrs, loss)
    assert math.log10(steep) == pytest.approx(-3, abs=0.15)
    kept = slice(10, 95)  # the first 10% and the last 5 points are left out, as fastai does
    assert low == pytest.approx(lrs[kept][np.argmin(loss[kept])] / 10)


def test_lr_find_from_a_config_writes_the_plot_and_a_usable_suggestion(tmp_path):
    res = lr_find(overrides=[*FAST], steps=40, plot=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0 and (tmp_path / "lr.csv").exists()
    assert 1e-7 <= res.suggestion <= 10 and 1e-8 <= res.min_div_10 <= 1
    cfg = load_config(None, [f"optim.lr={res.suggestion:.2g}"])  # as printed for --set
    assert cfg.optim.lr == pytest.approx(res.suggestion, rel=0.05)


def test_cli_lr_find(cli, tmp_path):
    args = [a for o in FAST for a in ("--set", o)]
    r = cli("lr-find", "--steps", "30", "--plot", str(tmp_path / "lr.png"), *args)
    assert r.code == 0, r
    assert "steepest descent of the smoothed loss" in r.out and "--set optim.lr=" in r.out
    value = r.out.split("--set optim.lr=")[1].split()[0]
    assert load_config(None, [f"optim.lr={value}"]).optim.lr > 0


@pytest.mark.parametrize("args, fragment", [
    (["--start", "0"], "start = 0.0 must be a positive number"),
    (["--start", "1", "--end", "0.5"], "end = 0.5 must be above start = 1.0"),
    (["--steps", "1"], "steps = 1 must be at least 2"),
    (["--set", "optim.name=lbfgs"], "[optim] name = 'lbfgs'"),
])
def test_cli_lr_find_bad_input(cli, tmp_path, args, fragment):
    r = cli("lr-find", "--plot", str(tmp_path / "lr.png"), *args, *[a for o in FAST for a in ("--set", o)])
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "lr.png").exists()


def test_range_test_refuses_lbfgs():
    model, batches = problem()
    with pytest.raises(ConfigError, match="first-order optimizer"):
        range_test(model, torch.optim.LBFGS(model.parameters()), batches)


def test_lr_find_runs_on_the_training_loop_and_honours_derivative_targets():
    base = [*FAST, "data.derivatives={x = \"dydx\"}"]
    kw = {"steps": 20, "start": 1e-2, "end": 1.0, "write": False}
    plain = lr_find(overrides=[*base, "train.derivative_weight=0"], **kw)
    differential = lr_find(overrides=[*base, "train.derivative_weight=10"], **kw)
    assert plain.losses[0] == differential.losses[0]  # same start: same weights, same first batch
    gap = np.abs(plain.losses[1:10] - differential.losses[1:10]) / plain.losses[1:10]
    assert gap.max() > 1e-2  # the derivative loss takes part in every step
    np.testing.assert_allclose(plain.lrs, differential.lrs)


def test_lr_find_leaves_the_random_streams_as_they_were():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    lr_find(overrides=[*FAST], steps=10, write=False)
    assert torch.equal(torch.rand(3), expected)
