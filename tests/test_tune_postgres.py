"""Many workers, one PostgreSQL study: a fixed trial budget split exactly, and a worker killed
mid-trial does not lose the study (its trial fails and is retried by the others).

Needs a server: ``NNFIN_TEST_POSTGRES=postgresql://user@host:port/db`` (``.ci/run`` starts a
throwaway one); without it these tests are skipped.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

URL = os.environ.get("NNFIN_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL, reason="NNFIN_TEST_POSTGRES is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one)")

CONFIG = """
[data]
n = 300
[train]
epochs = {epochs}
device = "cpu"
progress = false
[run]
plots = false
[tune]
strategy = "{strategy}"
folds = 2
heartbeat = 1
{trials}
[tune.space]
{space}
"""


def write_config(tmp_path, *, strategy, space, epochs, trials=None):
    path = tmp_path / "search.toml"
    path.write_text(CONFIG.format(strategy=strategy, space=space, epochs=epochs,
                                  trials=f"trials = {trials}" if trials else ""))
    return path


def start_workers(cfg, study, n):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "nnfin", "tune", str(cfg), "--worker", "--storage", URL,
           "--study", study, "-q"]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(n)]


def finish(procs, timeout=180):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout.decode(), stderr.decode()))
    return out


def load(study):
    import optuna

    from nnfin.tune.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(URL))


def by_state(study):
    trials = study.get_trials(deepcopy=False)
    return {s: [t for t in trials if t.state.name == s] for s in ("COMPLETE", "PRUNED", "FAIL",
                                                                 "RUNNING", "WAITING")}


def test_three_workers_complete_exactly_the_budget(tmp_path):
    study = f"budget-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path, strategy="random", epochs=5, trials=7,
                       space='"optim.lr" = {low = 1e-3, high = 0.1, log = true}\n'
                             '"model.width" = {low = 2, high = 16}')
    results = finish(start_workers(cfg, study, 3))  # all three start on an empty database
    assert all(code == 0 for code, _, _ in results), results
    states = by_state(load(study))
    assert len(states["COMPLETE"]) == 7
    assert not states["RUNNING"] and not states["FAIL"] and not states["WAITING"]
    numbers = [t.number for t in states["COMPLETE"]]
    assert len(set(numbers)) == 7
    assert len({tuple(sorted(t.params.items())) for t in states["COMPLETE"]}) == 7
    # (how the 7 split across workers depends on timing: a fast worker may take them all)

    # a plain nnfin tune on the finished study only reports and refits: no trial is added
    from nnfin.app.tune import tune

    res = tune(cfg, overrides=[f"tune.storage='{URL}'", f"tune.study='{study}'",
                               f"run.dir='{tmp_path / 'run'}'"])
    assert res.completed == 7 and len(load(study).trials) == 7
    assert (tmp_path / "run" / "tune" / "best.toml").exists() and res.run.metrics["test"]["n"] == 45


def test_a_worker_killed_mid_trial_does_not_lose_the_study(tmp_path):
    study = f"kill-{uuid.uuid4().hex[:8]}"
    # long enough trials (a stack of six networks trains 150 epochs in well under a second) for
    # the poll below to catch one running
    cfg = write_config(tmp_path, strategy="grid", epochs=3000,
                       space='"optim.lr" = [0.003, 0.01, 0.03]\n"model.width" = [4, 8]')
    procs = start_workers(cfg, study, 3)
    pids = {p.pid: p for p in procs}
    victim, killed_trial, shared = None, None, None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            shared = shared or load(study)
        except KeyError:  # the workers have not created the study yet
            continue
        for t in by_state(shared)["RUNNING"]:
            pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
            if pid in pids and pids[pid].poll() is None:
                victim, killed_trial = pids[pid], t.number
                victim.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
                break
    assert victim is not None, "no worker was seen running a trial"
    others = finish([p for p in procs if p is not victim])
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    assert all(code == 0 for code, _, _ in others), others

    states = by_state(load(study))
    assert len(states["COMPLETE"]) == 6  # the budget (the grid) still completes
    grid = {tuple(sorted(t.params.items())) for t in states["COMPLETE"]}
    assert len(grid) == 6  # every grid point once: none twice, none lost
    assert not states["RUNNING"] and not states["WAITING"]
    failed = [t for t in states["FAIL"] if t.number == killed_trial]
    assert failed, f"trial {killed_trial} of the killed worker should be FAIL"
    retry = [t for t in states["COMPLETE"] if t.system_attrs.get("failed_trial") == killed_trial]
    assert (len(retry) == 1 and retry[0].params == failed[0].params) or not failed[0].params
