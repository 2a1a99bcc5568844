"""K-fold cross-validation: folds, per-fold scaling, inner early-stopping split, API and CLI."""

import json

import numpy as np
import pytest
from sklearn.model_selection import KFold

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.config import load_config
from nnfin.data import load_arrays, split_indices
from nnfin.errors import NNFinError
from nnfin.train import folds as cvmod
from nnfin.train.folds import make_folds

BASE = [*FAST, "train.epochs=4"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_folds_partition_the_training_part_and_leave_the_test_part_out():
    cfg = load_config(None, BASE)
    folds = make_folds(cfg, 4, seed=3, inner_val=0.2)
    idx_train, idx_val, idx_test = split_indices(cfg.data.n, cfg.data.split, cfg.data.seed)
    pool = np.sort(np.concatenate([idx_train, idx_val]))
    held = np.concatenate([s[1] for s in folds.splits])
    assert np.array_equal(np.sort(held), pool)  # every training row is held out exactly once
    assert np.array_equal(folds.test, idx_test)
    for train, held_out, fit, inner in folds.splits:
        assert not set(train) & set(held_out)
        assert not set(np.concatenate([train, held_out])) & set(idx_test)
        assert np.array_equal(np.sort(np.concatenate([fit, inner])), train)
        assert len(inner) == round(0.2 * len(train))
    # the folds are scikit-learn's shuffled, seeded KFold of the training part
    expected = [pool[ho] for _, ho in KFold(4, shuffle=True, random_state=3).split(pool)]
    assert all(np.array_equal(a[1], b) for a, b in zip(folds.splits, expected, strict=True))


def test_folds_are_seeded():
    cfg = load_config(None, BASE)
    a, b, c = (make_folds(cfg, 3, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a.splits, b.splits, strict=True))
    assert not np.array_equal(a.splits[0][1], c.splits[0][1])


@pytest.mark.parametrize("early_stopping", [False, True])
def test_scaling_and_early_stopping_use_only_the_folds_training_rows(monkeypatch, early_stopping):
    seen = []
    real = cvmod.data_from_indices

    def spy(x, y, idx_train, idx_val, idx_test, **kw):
        data = real(x, y, idx_train, idx_val, idx_test, **kw)
        seen.append((idx_train, idx_val, idx_test, data))
        return data

    monkeypatch.setattr(cvmod, "data_from_indices", spy)
    over = [*BASE, f"early_stopping.enabled={str(early_stopping).lower()}", "early_stopping.patience=2"]
    cfg = load_config(None, over)
    folds = make_folds(cfg, 3)
    results = [cvmod.run_fold(cfg, folds, i) for i in range(3)]
    x = load_arrays(cfg.data)[0]
    for (idx_train, idx_val, idx_test, data), (train, held, fit, inner) in zip(seen, folds.splits,
                                                                               strict=True):
        assert np.array_equal(idx_test, held)  # scored on the held-out fold
        if early_stopping:  # monitored on an inner split of the training rows, never the held-out fold
            assert np.array_equal(idx_train, fit) and np.array_equal(idx_val, inner)
            assert len(idx_val) > 0 and not set(idx_val) & set(held)
        else:
            assert np.array_equal(idx_train, train) and len(idx_val) == 0
        # the scaler is fitted on the rows the fold trains on
        np.testing.assert_allclose(data.scaler.x_mean.numpy().ravel(), x[idx_train].mean(0), rtol=1e-10)
    assert [r.fold for r in results] == [0, 1, 2]


def test_cv_result_mean_std_and_files(tmp_path):
    res = nnfin.cv(overrides=[*BASE, f"run.dir={tmp_path / 'cv'}"], folds=3)
    vals = np.array([f.metrics["mse"] for f in res.folds])
    assert res.mean == pytest.approx(vals.mean()) and res.std == pytest.approx(vals.std())
    assert [f.n_held_out for f in res.folds] == [85, 85, 85]  # 255 training rows in 3 folds
    table = (tmp_path / "cv" / "cv.csv").read_text().splitlines()
    assert len(table) == 4 and "val_mse" in table[0]
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["mean"] == pytest.approx(res.mean) and summary["folds"] == 3
    assert (tmp_path / "cv" / "config.toml").exists()
    again = nnfin.cv(overrides=BASE, folds=3, write=False)
    assert again.mean == res.mean  # seeded: the same config gives the same folds and numbers


def test_fold_metric_matches_a_model_trained_by_hand_on_that_fold():
    import torch

    from nnfin.data import data_from_indices
    from nnfin.metrics import regression_metrics
    from nnfin.models import build_model
    from nnfin.runs import Run
    from nnfin.train.loop import Trainer

    cfg = load_config(None, BASE)
    folds = make_folds(cfg, 3)
    fold = cvmod.run_fold(cfg, folds, 1)
    train, held, _, _ = folds.splits[1]
    data = data_from_indices(folds.x, folds.y, train, held[:0], held, features=["x"], targets=["y"])
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, in_dim=1, out_dim=1)
    Trainer(model, data, cfg).fit()
    pred = Run(cfg, model, data.scaler, ["x"], ["y"]).predict(data.x_test)
    ref = regression_metrics(data.y_test.double().numpy(), pred)
    assert fold.metrics["mse"] == pytest.approx(ref["mse"], rel=1e-6)


def test_cli_cv_prints_folds_and_mean(cli, tmp_path):
    r = cli("cv", "-k", "3", "-q", "-o", str(tmp_path / "cv"), *sets(BASE))
    assert r.code == 0, r
    assert "3-fold cross-validation" in r.out and "mean" in r.out and "± std" in r.out
    assert "val_mse:" in r.out


@pytest.mark.parametrize("args, fragments", [
    (["-k", "1"], ["[tune] folds = 1"]),
    (["-k", "500"], ["[tune] folds = 500", "255 training rows"]),
    (["--set", "tune.inner_val=1.5"], ["[tune] inner_val = 1.5"]),
])
def test_cli_cv_bad_folds(cli, tmp_path, args, fragments):
    r = cli("cv", *args, "-q", "-o", str(tmp_path / "cv"), *sets(BASE))
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "cv").exists()


def test_cv_is_refused_before_training_when_folds_exceed_rows():
    with pytest.raises(NNFinError, match=r"folds = 400 is more than the 255 training rows"):
        nnfin.cv(overrides=BASE, folds=400, write=False)
