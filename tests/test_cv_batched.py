"""Cross-validation through the batched engine: the same fold results as one model at a time."""

import json

import pytest

import nnfin
from conftest import FAST
from nnfin.config import load_config
from nnfin.train import folds as cvmod
from nnfin.train.folds import evaluate_candidates, make_folds

KEYS = ("mse", "rmse", "mae", "r2", "max_abs_error", "loss")
# float64: the same formulas to rounding; float32: fused Adam in the Trainer rounds differently
REL = {"float64": 1e-11, "float32": 2e-5}


def cands(dtype: str, *extra: str) -> list:
    return [load_config(None, [*FAST, "train.epochs=6", f"train.dtype={dtype}",
                               f"model.neurons=[{w}, {w}]", *extra]) for w in (4, 9)]


def assert_same_folds(a, b, rel):
    assert len(a.folds) == len(b.folds)
    for x, y in zip(a.folds, b.folds, strict=True):
        assert (x.fold, x.status, x.epochs, x.restored_epoch) == (y.fold, y.status, y.epochs,
                                                                   y.restored_epoch)
        assert (x.n_train, x.n_held_out) == (y.n_train, y.n_held_out)
        for key in KEYS:
            assert x.metrics[key] == pytest.approx(y.metrics[key], rel=rel), key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("extra", [
    [],
    ["early_stopping.enabled=true", "early_stopping.patience=2", "train.epochs=12"],
    ["optim.name=sgd", "optim.momentum=0.9", "penalty.l2=1e-4"],
], ids=["adam", "early-stopping", "sgd-l2"])
def test_batched_folds_match_one_by_one(dtype, extra):
    cfgs = cands(dtype, *extra)
    folds = make_folds(cfgs[0], 3)
    batched = evaluate_candidates(cfgs, folds, batched=True)
    single = evaluate_candidates(cfgs, folds, batched=False)
    for a, b in zip(batched, single, strict=True):
        assert (a.engine, b.engine) == ("batched", "trainer")
        assert a.engine_note.startswith("batched: 6 models in 1 group (6 x ")
        assert_same_folds(a, b, REL[dtype])


def test_default_is_batched_and_config_can_turn_it_off(monkeypatch):
    calls = []
    real = cvmod.run_fold
    monkeypatch.setattr(cvmod, "run_fold", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    on = nnfin.cv(overrides=FAST, folds=3, write=False)
    assert on.engine == "batched" and calls == []
    off = nnfin.cv(overrides=[*FAST, "tune.batched=false"], folds=3, write=False)
    assert off.engine == "trainer" and calls == [0, 1, 2]
    assert "batched = false" in off.engine_note
    assert_same_folds(on, off, 2e-5)


def test_unsupported_config_falls_back_to_one_by_one(monkeypatch):
    calls = []
    real = cvmod.run_fold
    monkeypatch.setattr(cvmod, "run_fold", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    cfgs = [load_config(None, [*FAST, "optim.name=lbfgs", "train.sampling=full", "optim.lr=0.5"]),
            load_config(None, FAST)]
    lbfgs, adam = evaluate_candidates(cfgs, make_folds(cfgs[0], 3))
    assert lbfgs.engine == "trainer" and "lbfgs" in lbfgs.engine_note and calls == [0, 1, 2]
    assert adam.engine == "batched" and adam.engine_note.startswith("batched: 3 models in 1 group (")
    assert all(f.status == "finished" and f.metrics["mse"] > 0 for f in lbfgs.folds + adam.folds)


def test_pruning_hook_sees_batched_folds_after_the_group():
    cfgs = cands("float64")
    seen = []

    def on_fold(c, fold, running_mean):
        seen.append((c, fold.fold))
        return fold.fold < 1  # stop every candidate after its second fold

    res = evaluate_candidates(cfgs, make_folds(cfgs[0], 3), on_fold=on_fold)
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [len(r.folds) for r in res] == [2, 2]


def test_cv_json_and_cli_report_the_path(cli, tmp_path):
    res = nnfin.cv(overrides=[*FAST, f"run.dir={tmp_path / 'cv'}"], folds=3)
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["engine"] == "batched" == res.engine
    assert summary["engine_note"].startswith("batched: 3 models in 1 group (3 x [")
    assert "MiB each)" in summary["engine_note"]
    r = cli("cv", "-k", "3", "-o", str(tmp_path / "cv2"), *[a for o in FAST for a in ("--set", o)])
    assert r.code == 0, r
    assert "batched: 3 models in 1 group" in r.out
