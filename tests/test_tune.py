"""nnfin tune: search spaces, the three strategies on one Optuna path, pruning, outputs, refit,
continuing a study, Ctrl-C, and one-line errors for bad input."""

import math
import time

import optuna
import pandas as pd
import pytest

import nnfin
from conftest import FAST, assert_one_line_error
from nnfin.app.tune import tune
from nnfin.config import Config, load_config
from nnfin.train import folds as cvmod
from nnfin.tune import search
from nnfin.tune.search import Objective
from nnfin.tune.space import Range, apply_params, grid_size, grid_values, parse_space
from nnfin.tune.storage import Gate

BASE = [*FAST, "tune.folds=2"]
GRID = 'tune.space={"optim.lr" = [0.01, 0.05], "model.width" = [4, 8]}'


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def complete(result):
    return result.ranking[result.ranking["state"] == "COMPLETE"]


# ------------------------------------------------------------------------------ spaces


def test_width_and_layers_expand_into_neurons():
    base = Config()
    assert apply_params(base, {"model.width": 5, "model.layers": 3}).model.neurons == [5, 5, 5]
    assert apply_params(base, {"model.width": 9}).model.neurons == [9, 9]  # layers from [6, 6]
    assert apply_params(base, {"model.layers": 1}).model.neurons == [6]
    assert apply_params(base, {"optim.lr": 0.5, "penalty.l2": 1e-3}).penalty.l2 == 1e-3


def test_ranges_follow_the_config_types_and_grid_points():
    lr, width, l2 = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True},
                                 "model.width": {"low": 16, "high": 64, "step": 16},
                                 "penalty.l2": {"low": 0, "high": 1, "step": 0.25}})
    assert lr == Range("optim.lr", 1e-4, 1e-1, integer=False, log=True)
    assert grid_values(width) == [16, 32, 48, 64]
    assert grid_values(l2) == [0.0, 0.25, 0.5, 0.75, 1.0]  # a float key: a float range
    nested = parse_space({"optim": {"lr": [0.1, 0.2]}, "model.neurons": [[4], [8, 8]]})
    assert [p.name for p in nested] == ["optim.lr", "model.neurons"]
    assert grid_size(nested) == 4 and grid_values(nested[1]) == ["[4]", "[8, 8]"]


# ---------------------------------------------------------------------------- searching


def test_grid_search_runs_each_point_once_then_refits_and_tests(tmp_path):
    res = tune(overrides=[*BASE, GRID, f"run.dir={tmp_path / 'run'}"])
    assert res.budget == 4 and res.completed == 4  # trials defaults to the grid size
    done = complete(res)
    assert len({(r["optim.lr"], r["model.width"]) for _, r in done.iterrows()}) == 4
    assert list(done["mean"]) == sorted(done["mean"])  # ranked best first
    assert res.best_value == done["mean"].iloc[0]
    assert (done["folds"] == 2).all() and (done["std"] >= 0).all()
    out = tmp_path / "run" / "tune"
    for name in ("study.db", "trials.csv", "ranking.csv", "best.toml", "plots/history.png",
                 "plots/params.png"):
        assert (out / name).exists(), name
    assert len(pd.read_csv(out / "trials.csv")) == 4
    best = load_config(out / "best.toml")
    assert best.optim.lr == res.best_params["optim.lr"]
    assert best.model.neurons == [res.best_params["model.width"]] * 2
    assert best.tune is None and best.run.dir is None
    assert best.data.split == pytest.approx([0.85, 0.0, 0.15])  # refit on train + validation
    # the refit is a normal run folder, tested once on the untouched test part
    assert res.run.metrics["test"]["n"] == 45 and res.run.dir == tmp_path / "run"
    again = nnfin.fit(out / "best.toml", overrides=[f"run.dir={tmp_path / 'again'}", "run.plots=false"])
    assert again.metrics["test"]["mse"] == pytest.approx(res.run.metrics["test"]["mse"], rel=1e-6)


def test_rerun_continues_the_study_and_runs_only_the_remaining_trials(tmp_path, monkeypatch):
    over = [*BASE, "tune.strategy='random'", 'tune.space={"optim.lr" = {low = 1e-3, high = 0.1, log = true}}',
            f"run.dir={tmp_path / 'run'}", "tune.refit=false", "run.plots=false"]
    first = tune(overrides=[*over, "tune.trials=2"])
    calls = []
    real = search.evaluate_candidates
    monkeypatch.setattr(search, "evaluate_candidates",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    second = tune(overrides=[*over, "tune.trials=4"])
    assert calls == [2]  # the two remaining trials, trained together
    assert second.completed == 4 and sorted(second.ranking["trial"]) == [0, 1, 2, 3]
    kept = second.ranking.set_index("trial").loc[[0, 1], "mean"]
    assert list(kept) == list(first.ranking.set_index("trial").loc[[0, 1], "mean"])
    assert any("continuing: 2 of 4" in n for n in second.notes)


@pytest.mark.parametrize("strategy, sampler", [("random", "tpe"), ("bayes", "tpe"), ("bayes", "gp")])
def test_random_and_bayes_share_the_path(strategy, sampler):
    space = ('tune.space={"optim.lr" = {low = 1e-3, high = 0.1, log = true}, '
             '"model.width" = {low = 2, high = 8}}')
    res = tune(overrides=[*BASE, space, f"tune.strategy='{strategy}'", f"tune.sampler='{sampler}'",
                          "tune.trials=3"], write=False)
    assert res.completed == 3
    for p in complete(res)["params"]:
        assert 1e-3 <= p["optim.lr"] <= 0.1 and isinstance(p["model.width"], int)
        assert 2 <= p["model.width"] <= 8
    sampler_cls = {"random": "RandomSampler", "tpe": "TPESampler", "gp": "GPSampler"}
    assert type(res.study.sampler).__name__ == sampler_cls["random" if strategy == "random" else sampler]


class _PruningTrial:
    """A stand-in for optuna.Trial that asks to prune after the first report."""

    number = 0

    def __init__(self):
        self.reports, self.attrs = [], {}

    def suggest_categorical(self, name, choices):
        return choices[0]

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return True

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_pruning_reports_the_running_mean_and_stops_after_a_fold():
    cfg = load_config(None, [*BASE, "tune.folds=3", GRID])
    folds = cvmod.make_folds(cfg, 3)
    trial = _PruningTrial()
    with pytest.raises(optuna.TrialPruned, match="after 1 of 3 folds"):
        Objective(cfg, parse_space(cfg.tune.space), folds, "val_mse", Gate())(trial)
    assert len(trial.reports) == 1 and trial.reports[0][0] == 0
    assert trial.reports[0][1] == pytest.approx(trial.attrs["fold_values"][0])


def test_pruning_on_a_search_counts_pruned_trials_in_the_budget():
    space = 'tune.space={"optim.lr" = [1e-6, 1e-5, 1e-4, 0.001, 0.01, 0.03, 0.1, 1e-7]}'
    res = tune(overrides=[*BASE, "tune.folds=3", space, "tune.pruning=true"], write=False)
    states = res.ranking["state"].value_counts().to_dict()
    assert sum(states.values()) == 8 and states.get("COMPLETE", 0) >= 5
    pruned = res.ranking[res.ranking["state"] == "PRUNED"]
    assert (pruned["folds"] < 3).all() and list(res.ranking["state"]).index("COMPLETE") == 0


def test_ctrl_c_keeps_completed_trials_and_the_rerun_finishes_the_grid(tmp_path, monkeypatch):
    over = [*BASE, GRID, f"run.dir={tmp_path / 'run'}", "tune.refit=false", "run.plots=false",
            "tune.batch_trials=1"]
    real, calls = search.evaluate_candidates, []

    def interrupt_the_third_trial(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while the third trial trains
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(search, "evaluate_candidates", interrupt_the_third_trial)
    res = tune(overrides=over)
    assert res.interrupted and res.completed == 2
    monkeypatch.setattr(search, "evaluate_candidates", real)
    res = tune(overrides=over)
    assert not res.interrupted and res.completed == 4
    done = complete(res)
    assert len({(r["optim.lr"], r["model.width"]) for _, r in done.iterrows()}) == 4  # the full grid
    states = [t.state.name for t in res.study.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4


def test_trials_are_asked_in_batches_and_trained_together(monkeypatch):
    """Grid: all points in one call of the batched engine, with the same fold values as one
    trial at a time; bayes: batches of [tune] batch_trials."""
    calls = []
    real = search.evaluate_candidates
    monkeypatch.setattr(search, "evaluate_candidates",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    together = tune(overrides=[*BASE, GRID], write=False)
    assert calls == [4]
    assert {t.user_attrs["engine"] for t in together.study.trials} == {"batched"}
    assert all(len(t.user_attrs["batch"]) == 4 for t in together.study.trials)
    calls.clear()
    alone = tune(overrides=[*BASE, GRID, "tune.batch_trials=1"], write=False)
    assert calls == [1, 1, 1, 1]
    key = lambda r: (r["optim.lr"], r["model.width"])  # noqa: E731
    a = {key(r): r["mean"] for _, r in together.ranking.iterrows()}
    b = {key(r): r["mean"] for _, r in alone.ranking.iterrows()}
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4) for k in a)
    calls.clear()
    space = 'tune.space={"optim.lr" = {low = 1e-3, high = 0.1, log = true}}'
    res = tune(overrides=[*BASE, "tune.strategy='bayes'", space, "tune.trials=7",
                          "tune.batch_trials=3"], write=False)
    assert calls == [3, 3, 1] and res.completed == 7


def test_ctrl_c_in_a_batch_requeues_every_trial_of_it(tmp_path, monkeypatch):
    over = [*BASE, GRID, f"run.dir={tmp_path / 'run'}", "tune.refit=false", "run.plots=false",
            "tune.batch_trials=3"]
    real = search.evaluate_candidates

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "evaluate_candidates", interrupt)
    res = tune(overrides=over)
    assert res.interrupted and res.completed == 0
    assert [t.state.name for t in res.study.trials].count("FAIL") == 3
    monkeypatch.setattr(search, "evaluate_candidates", real)
    res = tune(overrides=over)
    assert not res.interrupted and res.completed == 4
    assert len({(r["optim.lr"], r["model.width"]) for _, r in complete(res).iterrows()}) == 4


def test_cli_tune_prints_the_ranking_and_the_refit(cli, tmp_path):
    cfg = tmp_path / "search.toml"
    cfg.write_text('[tune]\nstrategy = "grid"\nfolds = 2\n[tune.space]\n"optim.lr" = [0.01, 0.05]\n'
                   '"model.neurons" = [[4], [8, 8]]\n')
    r = cli("tune", str(cfg), "-q", "-o", str(tmp_path / "run"), *sets([*FAST, "run.plots=false"]))
    assert r.code == 0, r
    assert "ranking by val_mse" in r.out and "best:" in r.out and "4 of 4 trials" in r.out
    assert "metrics (data units)" in r.out and "test" in r.out
    r = cli("tune", str(cfg), "-q", "-o", str(tmp_path / "run"), *sets([*FAST, "run.plots=false"]))
    assert r.code == 0 and "continuing: 4 of 4" in r.out


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("extra, fragments", [
    ([], ["[tune] space is empty"]),
    (['tune.space={"optim.lr" = "fast"}'], ["[tune] space 'optim.lr' = 'fast'", "list of values"]),
    (['tune.space={"optim.lr" = []}'], ["'optim.lr' = []", "empty list"]),
    (['tune.space={"optim.lrr" = [0.1]}'], ["'optim.lrr' is not a config key", "did you mean 'optim.lr'"]),
    (['tune.space={"model.neuron" = [[4]]}'], ["did you mean 'model.neurons'"]),
    (['tune.space={"optim.lr" = {low = 0.1, high = 0.01}}'], ["low = 0.1 must be below high = 0.01"]),
    (['tune.space={"optim.lr" = {low = 0.1, high = 0.1}}'], ["low = 0.1 must be below high = 0.1"]),
    (['tune.space={"optim.lr" = {low = 0.0, high = 1.0, log = true}}'], ["log range needs low > 0"]),
    (['tune.space={"optim.lr" = {low = 0.01, hihg = 1.0}}'], ["unknown range key 'hihg'"]),
    (['tune.space={"optim.lr" = {low = 0.01, high = 1.0}}'], ["grid search needs a list"]),
    (['tune.space={"optim.lr" = [-1.0]}'], ["'optim.lr': the value -1.0 is refused"]),
    (['tune.space={"data.n" = [10]}'], ["[data] cannot be tuned"]),
    ([GRID, "tune.folds=1"], ["[tune] folds = 1"]),
    ([GRID, "tune.folds=1000"], ["[tune] folds = 1000 is more than the 255 training rows"]),
    ([GRID, "tune.trials=0"], ["[tune] trials = 0"]),
    ([GRID, "tune.trials=-3"], ["[tune] trials = -3"]),
    ([GRID, "tune.storage='foo'"], ["[tune] storage = 'foo'", "sqlite, memory"]),
    ([GRID, "tune.strategy='bayesian'"], ["[tune] strategy = 'bayesian'", "did you mean 'bayes'"]),
    ([GRID, "train.batch_size=100000"], ["batch_size = 100000"]),  # refused by the first trial
])
def test_bad_input_is_one_line_and_leaves_no_run_folder(cli, tmp_path, extra, fragments):
    r = cli("tune", "-q", "-o", str(tmp_path / "run"), *sets([*BASE, *extra]))
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "run").exists()


def test_unreachable_storage_fails_fast(cli, tmp_path):
    started = time.perf_counter()
    r = cli("tune", "-q", "-o", str(tmp_path / "run"), "--storage",
            "postgresql://nnfin:secret@127.0.0.1:1/nnfin", *sets([*BASE, GRID]))
    assert_one_line_error(r, "[tune] storage = 'postgresql://nnfin:***@127.0.0.1:1/nnfin' cannot be reached")
    assert "secret" not in r.err and time.perf_counter() - started < 15
    assert not (tmp_path / "run").exists()


def test_a_worker_needs_a_shared_database(cli):
    r = cli("tune", "--worker", "-q", *sets([*BASE, GRID]))
    assert_one_line_error(r, "[tune] storage = 'sqlite': a worker needs a database")


def test_another_config_cannot_join_an_existing_study(cli, tmp_path):
    run = str(tmp_path / "run")
    quick = [*BASE, GRID, "tune.refit=false", "run.plots=false"]
    assert cli("tune", "-q", "-o", run, *sets(quick)).code == 0
    r = cli("tune", "-q", "-o", run, *sets([*quick, "train.epochs=5"]))
    assert_one_line_error(r, "[tune] study = 'nnfin' was started with train.epochs = 3", "has 5")


def test_grid_trials_beyond_the_grid_are_capped():
    res = tune(overrides=[*BASE, GRID, "tune.trials=9"], write=False)
    assert res.dir is None and res.run is None and "in memory" in res.notes[0]
    assert res.budget == 4 and res.completed == 4 and any("capped" in n for n in res.notes)
    assert not math.isnan(res.best_value)


def test_a_study_started_before_a_config_key_existed_continues(cli, tmp_path):
    """A study records its config; keys added to nnfin since then take their defaults."""
    run = str(tmp_path / "run")
    quick = [*BASE, GRID, "tune.refit=false", "run.plots=false"]
    assert cli("tune", "-q", "-o", run, *sets(quick)).code == 0
    db = tmp_path / "run" / "tune" / "study.db"
    study = optuna.load_study(study_name="nnfin", storage=f"sqlite:///{db}")
    recorded = dict(study.user_attrs["nnfin_config"])
    recorded["data"] = {k: v for k, v in recorded["data"].items() if k != "shuffle"}  # an older nnfin's
    study.set_user_attr("nnfin_config", recorded)
    again = cli("tune", "-q", "-o", run, *sets(quick))
    assert again.code == 0, again
