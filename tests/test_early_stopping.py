"""Early stopping as the lecture uses it: validation-based, with patience, min_delta (absolute or
relative), a warm-up (start_from_epoch), a stop on non-finite values and restoring the best
weights - also when training ends without stopping early."""

import math

import pytest
import torch

from nnfin.config import load_config
from nnfin.data import build_data
from nnfin.models import build_model
from nnfin.train.callbacks import EarlyStopping
from nnfin.train.loop import Trainer


def feed(es, values):
    """Run ``check`` on epochs 1.. with these val_loss values; returns (stopped_at, reason)."""
    for epoch, v in enumerate(values, start=1):
        stop, reason = es.check(epoch, {"val_loss": v})
        if stop:
            return epoch, reason
    return None, ""


def test_absolute_min_delta():
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert feed(es, [1.0, 0.95, 0.92])[0] == 3  # improvements smaller than 0.1 do not count
    assert es.best == 1.0 and es.best_epoch == 1


def test_relative_min_delta_scales_with_the_best_value():
    es = EarlyStopping(patience=2, min_delta=0.1, relative=True)
    # 10% of the best: 1.0 -> 0.89 counts (> 0.1 better); 0.89 -> 0.81 does not (< 0.089)
    assert feed(es, [1.0, 0.89, 0.81, 0.82])[0] == 4
    assert es.best == pytest.approx(0.89) and es.best_epoch == 2
    small = EarlyStopping(patience=2, min_delta=0.1, relative=True)
    assert feed(small, [1e-4, 0.85e-4, 0.7e-4])[0] is None  # an absolute 0.1 would stop here


def test_start_from_epoch_ignores_the_warm_up():
    es = EarlyStopping(patience=2, start_from_epoch=4)
    stopped, _ = feed(es, [1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 7.0])
    assert stopped == 7  # epochs 1-3 neither set the best nor count as waiting
    assert es.best == 4.0 and es.best_epoch == 5


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_value_stops_at_once(bad):
    es = EarlyStopping(patience=50)
    stopped, reason = feed(es, [1.0, 0.5, bad, 0.1])
    assert stopped == 3 and "val_loss is" in reason


def test_missing_metric_lists_the_logged_ones():
    with pytest.raises(KeyError, match="logged: train_loss"):
        EarlyStopping("val_mse").check(1, {"train_loss": 1.0})


def _trainer(overrides, callbacks):
    cfg = load_config(None, ["train.progress=false", "train.device=cpu", "data.n=200",
                             "data.noise=0.3", *overrides])
    data = build_data(cfg.data)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=1, out_dim=1)
    return Trainer(model, data, cfg, callbacks=callbacks)


def test_restore_best_at_the_end_without_an_early_stop():
    es = EarlyStopping(patience=1000, restore_best=True)  # never stops early
    trainer = _trainer(["train.epochs=40", "optim.lr=0.2", "model.neurons=[32, 32]"], [es])
    state = trainer.fit()
    assert state.status == "finished" and state.epoch == 40
    vals = [h["val_loss"] for h in state.history]
    best = min(range(len(vals)), key=vals.__getitem__) + 1
    assert best < 40, "the test needs a run whose last epoch is not its best"
    assert state.restored_epoch == best
    assert trainer.evaluate("val") == pytest.approx(vals[best - 1], rel=1e-6)


def test_restore_best_false_keeps_the_last_weights():
    es = EarlyStopping(patience=1000, restore_best=False)
    trainer = _trainer(["train.epochs=40", "optim.lr=0.2", "model.neurons=[32, 32]"], [es])
    state = trainer.fit()
    assert state.restored_epoch is None
    assert trainer.evaluate("val") == pytest.approx(state.history[-1]["val_loss"], rel=1e-6)


def test_the_config_becomes_a_callback_in_one_place_with_every_field():
    from nnfin.config import EarlyStoppingConfig
    from nnfin.train.callbacks import EarlyStopping

    assert EarlyStopping.from_config(EarlyStoppingConfig()) is None  # off by default
    es = EarlyStoppingConfig(enabled=True, monitor="val_loss", patience=7, min_delta=0.25, relative=True,
                             start_from_epoch=3, restore_best=False)
    cb = EarlyStopping.from_config(es)
    for name in set(EarlyStoppingConfig.model_fields) - {"enabled"}:
        assert getattr(cb, name) == getattr(es, name), name
    assert EarlyStopping.from_config(es, restore_best=True).restore_best is True
