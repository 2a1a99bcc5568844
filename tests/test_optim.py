"""nnfin's optimizers against torch.optim's own: the same numbers, bit for bit."""

import copy

import pytest
import torch

import nnfin.train.optim as optim
from nnfin.config import OptimConfig
from nnfin.train.optim import build_optimizer


def _train(make_opt, *, steps=60, schedule=True, group_lrs=False):
    """A small network trained by ``make_opt(model)``: its parameters and optimizer."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = make_opt(net)
    if group_lrs:  # a second parameter group at its own rate
        opt.param_groups[0]["params"] = list(net[0].parameters())
        opt.add_param_group({"params": list(net[2].parameters()), "lr": 3e-3})
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7) if schedule else None
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 2, generator=gen)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        if i == 5:
            net[2].bias.grad = None  # a parameter without a gradient this step: left alone
        opt.step()
        if sched is not None and i % 4 == 3:
            sched.step()
    return net, opt


def _same(a, oa, b, ob):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(oa.state[p][key], ob.state[q][key]), key


@pytest.mark.parametrize("name, decay", [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)])
@pytest.mark.parametrize("group_lrs", [False, True])
def test_adam_equals_torch_fused_adam_bit_for_bit(name, decay, group_lrs):
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    kw = {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-7, "weight_decay": decay}
    a, oa = _train(lambda m: cls(m.parameters(), fused=True, **kw), group_lrs=group_lrs)
    b, ob = _train(lambda m: build_optimizer(OptimConfig(name=name, **kw), m.parameters()),
                   group_lrs=group_lrs)
    _same(a, oa, b, ob)
    assert oa.state_dict()["param_groups"] == ob.state_dict()["param_groups"]


def test_the_usual_step_skips_torchs_bookkeeping(monkeypatch):
    """After the first step (which creates the state), steps do not go through torch's
    ``adam()``; with a setting the short path does not take (amsgrad) they do."""
    import torch.optim.adam as torch_adam

    calls = []
    real = torch_adam.adam
    monkeypatch.setattr(torch_adam, "adam", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    _train(lambda m: build_optimizer(OptimConfig(name="adam", lr=1e-2), m.parameters()),
           steps=10)
    assert len(calls) == 1
    calls.clear()
    _train(lambda m: optim.Adam(m.parameters(), lr=1e-2, amsgrad=True, fused=True), steps=10)
    assert len(calls) == 10


def test_state_dict_round_trip_continues_identically():
    """An optimizer rebuilt from a state dict (a resumed run) continues as the original."""
    kw = {"lr": 1e-2}
    a, oa = _train(lambda m: build_optimizer(OptimConfig(name="adam", **kw), m.parameters()),
                   schedule=False, steps=20)
    torch.manual_seed(0)
    b = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    b.load_state_dict(a.state_dict())
    ob = build_optimizer(OptimConfig(name="adam", **kw), b.parameters())
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as read from a checkpoint
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 2, generator=gen)
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
    _same(a, oa, b, ob)
