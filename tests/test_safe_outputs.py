"""Every command's output path keeps what was there: refusals, --force, atomic replacement,
the run-folder lock, checkpoint rotation, faults as one line, files that follow the umask."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nnfin
from conftest import assert_one_line_error
from nnfin import files
from nnfin.app import report as report_mod
from nnfin.app.resume import ResumeWarning
from nnfin.train.checkpoint import checkpoint_problem

TINY = ["train.device=cpu", "train.progress=false", "data.n=300", "train.epochs=3", "run.plots=false"]
BS = ["data.kind=black-scholes", "data.n=400", "train.epochs=2", "model.neurons=[8]",
      "train.progress=false", "train.device=cpu"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(files.TMP_SUFFIX)]


def sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


# ------------------------------------------------------------------ 1. lr-find --plot


@pytest.mark.parametrize("existing", ["p.png", "p.csv"])
def test_lr_find_refuses_an_existing_plot_or_csv_before_running(tmp_path, cli, existing):
    (tmp_path / existing).write_bytes(b"user file")
    result = cli("lr-find", *sets(*TINY), "--steps", "10", "--plot", str(tmp_path / "p.png"))
    assert_one_line_error(result, existing, "already exists", "--force")
    assert (tmp_path / existing).read_bytes() == b"user file"
    assert {p.name for p in tmp_path.iterdir()} == {existing}


def test_lr_find_force_replaces_both(tmp_path, cli):
    for name in ("p.png", "p.csv"):
        (tmp_path / name).write_bytes(b"old")
    result = cli("lr-find", *sets(*TINY), "--steps", "10", "--plot", str(tmp_path / "p.png"), "--force")
    assert result.code == 0, result
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "p.csv").read_text().startswith("lr,")


# ---------------------------------------------------------------- 2. report -o DIR


@pytest.fixture
def bs_run(tmp_path, monkeypatch):
    monkeypatch.setitem(report_mod.DEFAULTS, "n", 200)
    return nnfin.fit(overrides=[*BS, f"run.dir={tmp_path / 'bs'}", "run.plots=false"])


def test_report_out_refuses_existing_report_files(tmp_path, cli, bs_run):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("my own table\n")
    result = cli("report", str(bs_run.dir), "--n", "200", "--no-plots", "-o", str(out))
    assert_one_line_error(result, "metrics.csv", "already exists", "--force")
    assert (out / "metrics.csv").read_text() == "my own table\n"
    assert {p.name for p in out.iterdir()} == {"metrics.csv"}
    result = cli("report", str(bs_run.dir), "--n", "200", "--no-plots", "-o", str(out), "--force")
    assert result.code == 0, result
    assert (out / "metrics.csv").read_text().startswith("split,")


def test_report_into_the_run_folder_rewrites_its_own_report(cli, bs_run):
    before = (bs_run.dir / "report" / "metrics.csv").read_bytes()
    result = cli("report", str(bs_run.dir), "--n", "200", "--seed", "5", "--no-plots")
    assert result.code == 0, result
    assert (bs_run.dir / "report" / "metrics.csv").read_bytes() != before


def test_report_is_refused_while_another_process_writes_the_run(cli, bs_run, holder):
    pid = holder(bs_run.dir)
    assert_one_line_error(cli("report", str(bs_run.dir), "--n", "200", "--no-plots"),
                          f"process {pid}", "in use")


# ------------------------------------------------ 3. nnfin data --force, killed mid-write


def test_data_force_killed_mid_write_keeps_the_old_file(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("moneyness,tau\n1,2\n" * 1000)
    before = sha(old)
    proc = subprocess.Popen([sys.executable, "-m", "nnfin", "data", "black-scholes", "--n", "3000000",
                             "--out", str(old), "--force"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while True:
        tmps = [p for p in tmp_path.iterdir() if p.name.endswith(files.TMP_SUFFIX)]
        if tmps and tmps[0].stat().st_size > 1_000_000:
            break
        assert proc.poll() is None and time.monotonic() < deadline, "the write never started"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sha(old) == before  # the old file, byte for byte, not a partial CSV
    files.write_text(tmp_path / "next.txt", "x")  # the next write in the folder sweeps the rest
    assert no_temporaries(tmp_path)


def test_data_out_through_a_dangling_symlink_is_refused(tmp_path, cli):
    link = tmp_path / "bs.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    result = cli("data", "black-scholes", "--n", "10", "--out", str(link), "--force")
    assert_one_line_error(result, "symbolic link", "does not exist")
    assert not (tmp_path / "elsewhere.csv").exists()


# ------------------------------------------------------------- 4. checkpoint rotation


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_last_checkpoint_never_replaces_a_good_prev(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    nnfin.fit(overrides=[*TINY, "train.epochs=3", "run.checkpoint_every=1", f"run.dir={run_dir}"])
    ckpt = run_dir / "checkpoints"
    assert checkpoint_problem(ckpt / "prev.ckpt") is None
    _corrupt(ckpt / "last.ckpt")
    good = sha(ckpt / "prev.ckpt")

    def killed(*a):  # the process dies just before the new checkpoint lands
        assert any(checkpoint_problem(ckpt / n) is None for n in ("last.ckpt", "prev.ckpt"))
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_commit", killed)
    with pytest.warns(ResumeWarning, match="corrupted"), pytest.raises(KeyboardInterrupt):
        nnfin.resume(run_dir, epochs=5)
    assert sha(ckpt / "prev.ckpt") == good  # still there, still good
    monkeypatch.undo()
    with pytest.warns(ResumeWarning, match="corrupted"):
        run = nnfin.resume(run_dir, epochs=5)
    assert run.metrics["epochs"] == 5
    assert checkpoint_problem(ckpt / "last.ckpt") is None and checkpoint_problem(ckpt / "prev.ckpt") is None


def test_at_every_rename_a_verified_checkpoint_exists(tmp_path, monkeypatch):
    ckpt = tmp_path / "r" / "checkpoints"
    seen: list[bool] = []
    real = os.replace

    def watched(src, dst):
        real(src, dst)
        if ckpt.is_dir():
            seen.append(any(checkpoint_problem(ckpt / n) is None for n in ("last.ckpt", "prev.ckpt")))

    monkeypatch.setattr(files.os, "replace", watched)
    nnfin.fit(overrides=[*TINY, "train.epochs=4", "run.checkpoint_every=1", f"run.dir={tmp_path / 'r'}"])
    assert len(seen) > 4 and all(seen[1:])  # from the first checkpoint on


def test_a_missing_last_checkpoint_falls_back_and_says_so(tmp_path):
    run_dir = tmp_path / "r"
    nnfin.fit(overrides=[*TINY, "run.checkpoint_every=1", f"run.dir={run_dir}"])
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    with pytest.warns(ResumeWarning, match=r"last\.ckpt' is missing.*falling back"):
        nnfin.resume(run_dir, epochs=5)


def test_a_resumed_run_verifies_last_ckpt_once_not_at_every_write(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    nnfin.fit(overrides=[*TINY, "train.epochs=2", "run.checkpoint_every=1", f"run.dir={run_dir}"])
    calls = []
    real = checkpoint_problem
    monkeypatch.setattr("nnfin.train.checkpoint.checkpoint_problem",
                        lambda p: calls.append(p) or real(p))
    nnfin.resume(run_dir, epochs=6)  # four more checkpoint writes
    assert calls == [run_dir / "checkpoints" / "last.ckpt"]


# ------------------------------------------------------------------- 5. the run lock


HOLD = textwrap.dedent("""
    import sys, time
    from nnfin.files import RunLock

    with RunLock(sys.argv[1], "nnfin resume"):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder():
    procs = []

    def hold(folder: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc.pid

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_resume_is_refused_while_another_process_holds_the_run(tmp_path, cli, holder):
    run_dir = tmp_path / "r"
    nnfin.fit(overrides=[*TINY, f"run.dir={run_dir}"])
    def contents() -> dict[str, str]:
        return {p.name: sha(p) for p in run_dir.rglob("*") if p.is_file() and p.name != files.LOCK_NAME}

    before = contents()
    pid = holder(run_dir)
    result = cli("resume", str(run_dir), "--epochs", "6", "-q")
    assert_one_line_error(result, f"process {pid}", "nnfin resume", str(run_dir))
    assert contents() == before


def test_fit_into_a_locked_empty_folder_is_refused_and_the_folder_stays(tmp_path, cli, holder):
    folder = tmp_path / "empty"
    folder.mkdir()
    pid = holder(folder)
    result = cli("fit", "-q", "-o", str(folder), *sets(*TINY))
    assert result.code == 2 and f"process {pid}" in result.err, result
    assert folder.is_dir()


def test_two_resumes_at_once_one_trains_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "r"
    nnfin.fit(overrides=[*TINY, "run.checkpoint_every=1", "data.n=2000", f"run.dir={run_dir}"])
    cmd = [sys.executable, "-m", "nnfin", "resume", str(run_dir), "--epochs", "400", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert refused.startswith("error:") and "in use by process" in refused and "Traceback" not in refused


# -------------------------------------------- 6. -o: an existing empty folder survives


def test_a_refused_config_keeps_the_users_empty_folder(tmp_path, cli):
    folder = tmp_path / "mine"
    folder.mkdir()
    result = cli("fit", "-q", "-o", str(folder), *sets(*TINY, "train.batch_size=100000"))
    assert_one_line_error(result, "batch_size")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_refused_config_removes_the_folder_nnfin_made(tmp_path, cli):
    folder = tmp_path / "new"
    result = cli("fit", "-q", "-o", str(folder), *sets(*TINY, "train.batch_size=100000"))
    assert_one_line_error(result, "batch_size")
    assert not folder.exists()


# ---------------------------------------------- 7. faults while writing: one line, exit 2


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT])
@pytest.mark.parametrize("target", ["last.ckpt", "model.safetensors", "model.json", "metrics.json"])
def test_faults_while_fit_writes_are_one_line(tmp_path, cli, monkeypatch, code, target):
    real = files._fsync

    def fsync(path, folder=False):
        if not folder and Path(path).name.startswith(f".{target}."):
            raise OSError(code, os.strerror(code))
        return real(path, folder=folder)

    monkeypatch.setattr(files, "_fsync", fsync)
    result = cli("fit", "-q", "-o", str(tmp_path / "r"), *sets(*TINY))
    assert_one_line_error(result, target, errno.errorcode[code], "nothing was changed")
    assert no_temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_faults_while_predict_writes_are_one_line(tmp_path, cli, monkeypatch, code):
    nnfin.fit(overrides=[*TINY, f"run.dir={tmp_path / 'r'}"])
    inputs = tmp_path / "x.csv"
    inputs.write_text("x\n0.1\n0.2\n")
    out = tmp_path / "pred.csv"
    out.write_text("old predictions\n")
    monkeypatch.setattr(files, "_fsync", lambda p, folder=False: (_ for _ in ()).throw(OSError(code, "x")))
    result = cli("predict", str(tmp_path / "r"), str(inputs), "-o", str(out), "--force")
    assert_one_line_error(result, "pred.csv", errno.errorcode[code])
    assert out.read_text() == "old predictions\n"
    assert no_temporaries(tmp_path)


# ----------------------------------------------------------------------- 12. the umask


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_file_of_a_run_folder_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        nnfin.fit(overrides=[*TINY, "run.plots=true", "run.checkpoint_every=1", f"run.dir={tmp_path / 'r'}"])
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777
             for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != files.LOCK_NAME}
    assert {"r/model.safetensors", "r/model.json", "r/metrics.json", "r/config.toml",
            "r/checkpoints/last.ckpt", "r/plots/loss.png"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~mask}, modes


# --------------------------------------------------------------- 13. smaller defects


def test_a_runs_own_config_reruns_with_nnfin_fit(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = cli("fit", "-q", "-o", "made-with-o", *sets(*TINY))
    assert first.code == 0, first
    again = cli("fit", "-q", "made-with-o/config.toml")
    assert again.code == 0, again
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "model.json").exists()


def test_inspect_of_a_file_says_it_is_not_a_run_folder(tmp_path, cli):
    (tmp_path / "evil.pth").write_bytes(b"\x80\x04junk")
    result = cli("inspect", str(tmp_path / "evil.pth"))
    assert_one_line_error(result, "evil.pth")
    assert "does not exist" not in result.err


def test_cv_with_a_refused_config_leaves_no_run_folder(tmp_path, cli):
    folder = tmp_path / "cv"
    result = cli("cv", "-q", "-o", str(folder), "--folds", "2", *sets(*TINY, "train.batch_size=100000"))
    assert_one_line_error(result, "batch_size")
    assert not folder.exists()
