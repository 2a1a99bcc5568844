"""Time-ordered data: an unshuffled split (``[data] shuffle = false``) and time-series folds
(``[tune] cv = "time-series"``) that never train on rows after the ones they are scored on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold, TimeSeriesSplit

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.config import load_config
from nnfin.data import build_data, load_arrays, split_indices
from nnfin.errors import ConfigError, DataError
from nnfin.train.folds import evaluate_candidates, make_folds

ORDERED = ["data.shuffle=false"]
TIME_SERIES = [*ORDERED, "tune.cv=time-series"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


# ------------------------------------------------------------------------------ the split


def test_unshuffled_split_keeps_the_row_order():
    train, val, test = split_indices(20, [0.6, 0.2, 0.2], 3, shuffle=False)
    assert train.tolist() == list(range(12))
    assert val.tolist() == list(range(12, 16))
    assert test.tolist() == list(range(16, 20))


@pytest.mark.parametrize("split", [[0.7, 0.15, 0.15], [0.5, 0.5, 0.0], [0.8, 0.0, 0.2]])
def test_unshuffled_split_has_the_shuffled_sizes(split):
    for n in (7, 100, 301):
        ordered = split_indices(n, split, 0, shuffle=False)
        shuffled = split_indices(n, split, 0)
        assert [len(a) for a in ordered] == [len(a) for a in shuffled]
        assert np.array_equal(np.concatenate(ordered), np.arange(n))  # nothing permuted


def test_build_data_trains_on_the_first_rows_and_scales_on_them_only():
    cfg = load_config(None, [*FAST, *ORDERED, "data.split=[0.6, 0.2, 0.2]"]).data
    x, y, _, _ = load_arrays(cfg)
    data = build_data(cfg, dtype="float64")
    n_train, n_val = 180, 60
    assert np.array_equal(data.x_train.numpy(), x[:n_train])
    assert np.array_equal(data.y_train.numpy(), y[:n_train])
    assert np.array_equal(data.x_val.numpy(), x[n_train:n_train + n_val])
    assert np.array_equal(data.x_test.numpy(), x[n_train + n_val:])
    assert data.scaler is not None
    np.testing.assert_allclose(data.scaler.x_mean.numpy(), x[:n_train].mean(0), rtol=1e-12)
    np.testing.assert_allclose(data.scaler.y_mean.numpy(), y[:n_train].mean(0), rtol=1e-12)


def test_default_split_is_unchanged():
    # the seeded permutation the split has always used (values from before shuffle existed)
    assert [a.tolist() for a in split_indices(12, [0.5, 0.25, 0.25], 7)] == \
        [[0, 1, 3, 4, 6, 10], [2, 7, 8], [5, 9, 11]]
    perm = np.random.default_rng(4).permutation(300)
    expected = [np.sort(perm[:210]), np.sort(perm[210:255]), np.sort(perm[255:])]
    cfg = load_config(None, [*FAST, "data.seed=4"]).data
    assert cfg.shuffle is True
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(300, cfg.split, 4), expected,
                                                     strict=True))
    x, _, _, _ = load_arrays(cfg)
    assert np.array_equal(build_data(cfg, dtype="float64").x_train.numpy(), x[expected[0]])


# ------------------------------------------------------------------------------ the folds


def test_default_folds_are_unchanged():
    # shuffled, seeded KFold and a seeded inner split (values from before cv existed)
    cfg = load_config(None, ["data.n=16"])
    assert cfg.data.shuffle and cfg.tune is None
    folds = make_folds(cfg, 3, seed=5, inner_val=0.25)
    assert [[a.tolist() for a in s] for s in folds.splits] == [
        [[0, 4, 5, 7, 9, 10, 12, 13, 14], [2, 3, 6, 8, 11], [0, 5, 7, 10, 12, 13, 14], [4, 9]],
        [[0, 2, 3, 4, 6, 7, 8, 11, 13], [5, 9, 10, 12, 14], [0, 2, 3, 4, 6, 11, 13], [7, 8]],
        [[2, 3, 5, 6, 8, 9, 10, 11, 12, 14], [0, 4, 7, 13], [2, 3, 6, 9, 10, 11, 12, 14], [5, 8]]]
    assert folds.test.tolist() == [1, 15]
    kfold = make_folds(load_config(None, ["data.n=16", "tune.cv=kfold"]), 3, seed=5, inner_val=0.25)
    assert all(np.array_equal(a, b) for s, t in zip(folds.splits, kfold.splits, strict=True)
               for a, b in zip(s, t, strict=True))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_time_series_folds_never_look_ahead(k):
    cfg = load_config(None, [*FAST, *TIME_SERIES])
    folds = make_folds(cfg, k, seed=3, inner_val=0.2)
    idx_train, idx_val, _ = split_indices(300, cfg.data.split, 0, shuffle=False)
    pool = np.concatenate([idx_train, idx_val])
    assert np.array_equal(pool, np.arange(255)) and np.array_equal(folds.test, np.arange(255, 300))
    expected = list(TimeSeriesSplit(n_splits=k).split(pool))
    assert folds.k == k
    for i, (train, held, fit, inner) in enumerate(folds.splits):
        assert np.array_equal(train, pool[expected[i][0]]) and np.array_equal(held, pool[expected[i][1]])
        assert np.array_equal(train, np.arange(len(train)))  # expanding window: all the past
        assert np.array_equal(held, np.arange(held[0], held[-1] + 1))  # the next block
        assert train.max() < held.min()
        later = np.concatenate([s[1] for s in folds.splits[i:]])
        assert not set(train) & set(later)  # no row of this or a later block
        assert max(train.max(), held.max()) < folds.test.min()
        n_inner = round(0.2 * len(train))
        assert np.array_equal(inner, train[-n_inner:])  # the latest training rows
        assert np.array_equal(fit, train[:-n_inner])
    for i in range(1, k):
        assert np.array_equal(folds.splits[i][0], np.concatenate(folds.splits[i - 1][:2]))


def test_unshuffled_kfold_keeps_the_order_and_monitors_the_last_rows():
    cfg = load_config(None, [*FAST, *ORDERED])
    folds = make_folds(cfg, 4, seed=3, inner_val=0.2)
    pool = np.arange(255)
    for (train, held, fit, inner), (tr, ho) in zip(folds.splits, KFold(4).split(pool), strict=True):
        assert np.array_equal(train, tr) and np.array_equal(held, ho)  # contiguous blocks
        n_inner = round(0.2 * len(train))
        assert np.array_equal(inner, train[-n_inner:]) and np.array_equal(fit, train[:-n_inner])
    assert np.array_equal(folds.test, np.arange(255, 300))


def test_time_series_folds_through_cv():
    res = nnfin.cv(overrides=[*FAST, *TIME_SERIES, "train.batch_size=32"], folds=3, write=False)
    # TimeSeriesSplit(3) of 255 rows: held-out blocks of 63 after 66, 129 and 192 rows
    assert [(f.n_train, f.n_held_out) for f in res.folds] == [(66, 63), (129, 63), (192, 63)]
    assert all(f.status == "finished" and f.metrics["mse"] > 0 for f in res.folds)


# -------------------------------------------------------------------------------- refusals


def test_time_series_folds_refuse_a_shuffled_split():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["tune.cv=time-series"])
    assert str(err.value) == ("[tune] cv = 'time-series' needs ordered rows: set [data] shuffle = "
                              "false (a shuffled split scatters the test rows through the past)")
    with pytest.raises(ConfigError, match=r"needs ordered rows: set \[data\] shuffle = false"):
        make_folds(load_config(None, FAST), 3, cv="time-series")


def test_cli_refuses_time_series_folds_of_a_shuffled_split(cli, tmp_path):
    r = cli("cv", "-k", "3", "-q", "-o", str(tmp_path / "cv"), *sets([*FAST, "tune.cv=time-series"]))
    assert_one_line_error(r, "[tune] cv = 'time-series'", "[data] shuffle = false")
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("item, fragments", [
    ("tune.cv=timeseries", ["[tune] cv = 'timeseries' is not allowed", "kfold, time-series",
                            "did you mean 'time-series'"]),
    ("tune.cv=1", ["[tune] cv = 1"]),
    ("data.shuffle=2", ["[data] shuffle = 2", "valid boolean"]),
    ("data.shuffle='maybe'", ["[data] shuffle = 'maybe'", "valid boolean"]),
])
def test_bad_values_are_one_line(cli, tmp_path, item, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(None, [item])
    assert "\n" not in str(err.value)
    for frag in fragments:
        assert frag in str(err.value)
    assert_one_line_error(cli("cv", "-q", "-o", str(tmp_path / "cv"), "--set", item), *fragments)


def test_time_series_folds_need_a_first_block():
    cfg = load_config(None, ["data.n=10", "data.split=[0.5, 0.0, 0.5]", *TIME_SERIES])
    with pytest.raises(DataError, match=r"folds = 5 with cv = 'time-series' needs more than the 5"):
        make_folds(cfg, 5)
    assert make_folds(cfg, 4).k == 4


# ------------------------------------------------------------ batched == one by one


@pytest.mark.parametrize("dtype, rel", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("extra", [
    [],
    ["early_stopping.enabled=true", "early_stopping.patience=2", "train.epochs=12"],
], ids=["adam", "early-stopping"])
def test_batched_time_series_folds_match_one_by_one(dtype, rel, extra):
    cfgs = [load_config(None, [*FAST, *TIME_SERIES, "train.epochs=6", "train.batch_size=32",
                               f"train.dtype={dtype}", f"model.neurons=[{w}, {w}]", *extra])
            for w in (4, 9)]
    folds = make_folds(cfgs[0], 3)
    assert len({len(s[2]) for s in folds.splits}) == 3  # folds of different sizes in one stack
    batched = evaluate_candidates(cfgs, folds, batched=True)
    single = evaluate_candidates(cfgs, folds, batched=False)
    for a, b in zip(batched, single, strict=True):
        assert (a.engine, b.engine) == ("batched", "trainer")
        assert len(a.folds) == len(b.folds) == 3
        for x, y in zip(a.folds, b.folds, strict=True):
            assert (x.fold, x.status, x.epochs, x.restored_epoch) == (y.fold, y.status, y.epochs,
                                                                       y.restored_epoch)
            assert (x.n_train, x.n_held_out) == (y.n_train, y.n_held_out)
            for key in ("mse", "rmse", "mae", "r2", "max_abs_error", "loss"):
                assert x.metrics[key] == pytest.approx(y.metrics[key], rel=rel), key
