"""The one writer (nnfin.files): atomic, no overwrite without force, umask, faults as one line,
no temporary files left, stale ones swept; the run-folder lock."""

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

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from nnfin import files
from nnfin.errors import NNFinError, RunFolderBusy, WriteError

FAULTS = [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(files.TMP_SUFFIX))


# every writer nnfin has, writing "new" content to a path
WRITERS = {
    "bytes": lambda p, force: files.write_bytes(p, b"new" * 1000, force=force),
    "text": lambda p, force: files.write_text(p, "new\n", force=force),
    "json": lambda p, force: files.write_json(p, {"a": 1}, force=force),
    "csv": lambda p, force: files.write_frame(p.with_suffix(".csv"), pd.DataFrame({"a": [1.0]}),
                                              force=force),
    "parquet": lambda p, force: files.write_frame(p.with_suffix(".parquet"), pd.DataFrame({"a": [1]}),
                                                  force=force),
    "safetensors": lambda p, force: files.write_with(
        p, lambda tmp: save_file({"w": torch.ones(3)}, str(tmp)), force=force),
    "figure": lambda p, force: files.save_figure(_figure(), p.with_suffix(".png"), force=force),
}


def _figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def _target(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / "out.bin"
    return {"csv": p.with_suffix(".csv"), "parquet": p.with_suffix(".parquet"),
            "figure": p.with_suffix(".png")}.get(kind, p)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_existing_file_needs_force_and_force_replaces(tmp_path, kind):
    target = _target(tmp_path, kind)
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match="already exists; pass --force") as exc:
        WRITERS[kind](tmp_path / "out.bin", False)
    assert str(target) in str(exc.value) and "\n" not in str(exc.value)
    assert target.read_bytes() == b"old"
    WRITERS[kind](tmp_path / "out.bin", True)
    assert target.read_bytes() != b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, kind, umask):
    old = os.umask(umask)
    try:
        WRITERS[kind](tmp_path / "out.bin", False)
    finally:
        os.umask(old)
    assert _target(tmp_path, kind).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("step", ["create", "write", "fsync", "commit"])
@pytest.mark.parametrize("code", FAULTS)
def test_a_fault_at_each_step_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, kind,
                                                                         step, code):
    target = _target(tmp_path, kind)
    target.write_bytes(b"old content")
    before = sha(target)
    fault = OSError(code, os.strerror(code))

    def boom(*a, **k):
        raise fault

    if step == "create":
        real_open = os.open
        monkeypatch.setattr(files.os, "open", lambda p, *a, **k: boom() if str(p).endswith(
            files.TMP_SUFFIX) and a and a[0] & os.O_CREAT else real_open(p, *a, **k))
    elif step == "write":  # nnfin's own write, or the library's, into the temporary file
        from matplotlib.figure import Figure

        where = {"csv": (pd.DataFrame, "to_csv"), "parquet": (pd.DataFrame, "to_parquet"),
                 "safetensors": (sys.modules[__name__], "save_file"), "figure": (Figure, "savefig")}
        owner, name = where.get(kind, (files.os, "write"))
        monkeypatch.setattr(owner, name, boom)
    elif step == "fsync":
        monkeypatch.setattr(files, "_fsync", lambda path, folder=False: None if folder else boom())
    else:
        monkeypatch.setattr(files, "_commit", lambda *a: boom())
    with pytest.raises(WriteError) as exc:
        WRITERS[kind](tmp_path / "out.bin", True)
    msg = str(exc.value)
    assert "\n" not in msg and str(target) in msg and errno.errorcode[code] in msg, msg
    assert sha(target) == before
    assert leftovers(tmp_path) == []


def test_without_force_a_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "race.txt"
    with pytest.raises(WriteError, match="already exists"), files.replacing(target) as tmp:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"theirs")  # another process got there first
    assert target.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == []


def test_dangling_symlink_and_folder_targets_are_refused(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "nowhere" / "x.csv")
    with pytest.raises(WriteError, match="symbolic link"):
        files.write_text(link, "x", force=True)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(WriteError, match="is a folder"):
        files.write_text(tmp_path, "x", force=True)
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        files.write_text(blocker / "x.txt", "x")
    assert blocker.read_text() == "user data"


def test_an_exception_inside_the_block_removes_the_temporary_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), files.replacing(target, force=True) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and leftovers(tmp_path) == []


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from nnfin import files

    def slow(tmp):
        with open(tmp, "wb") as f:
            for _ in range(10_000):
                f.write(b"x" * 10_000)
                f.flush()
                time.sleep(0.001)

    files.write_with(sys.argv[1], slow, force=True)
""")


def test_sigkill_mid_write_keeps_the_old_file_and_the_next_write_sweeps_the_temporary(tmp_path):
    target = tmp_path / "data.csv"
    target.write_text("a\n1\n")
    before = sha(target)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)])
    deadline = time.monotonic() + 60
    while not any((tmp_path / n).stat().st_size > 100_000 for n in leftovers(tmp_path)):
        assert time.monotonic() < deadline and proc.poll() is None, "the writer never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sha(target) == before
    assert len(leftovers(tmp_path)) == 1  # a killed process cannot clean up ...
    files.write_text(tmp_path / "other.txt", "x")
    assert leftovers(tmp_path) == []  # ... the next write in the folder does
    assert sha(target) == before


def test_temporary_files_of_live_processes_are_left_alone(tmp_path):
    mine = tmp_path / f".x.{files._HOST}.{os.getpid()}-abcd{files.TMP_SUFFIX}"
    mine.write_text("in progress")
    files.sweep(tmp_path)
    assert mine.exists()


def test_os_error_message_names_the_path_and_the_reason():
    msg = str(files.os_error(OSError(errno.EROFS, "Read-only file system"), "runs/a/b.csv",
                             field="--out"))
    assert msg == "cannot write --out 'runs/a/b.csv': read-only file system (EROFS); nothing was changed"


# ------------------------------------------------------------------------------ the lock


HOLDER = textwrap.dedent("""
    import sys, time
    from nnfin.files import RunLock

    with RunLock(sys.argv[1], "nnfin fit"):
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def held_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_with_the_holders_pid(held_folder):
    folder, pid = held_folder
    with pytest.raises(RunFolderBusy, match=f"in use by process {pid} .*nnfin fit"):
        files.RunLock(folder, "nnfin resume").acquire()


def test_a_killed_holder_leaves_no_stale_lock(held_folder):
    folder, pid = held_folder
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with files.RunLock(folder, "nnfin resume"):
        pass


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path):
    a, b = files.RunLock(tmp_path, "x"), files.RunLock(tmp_path, "y")
    a.acquire()
    b.acquire()  # the same process: re-entrant
    b.release()
    a.release()
    assert str(os.path.realpath(tmp_path)) not in files.RunLock._held


def test_errors_are_nnfin_errors():
    assert issubclass(WriteError, NNFinError) and issubclass(RunFolderBusy, NNFinError)


def test_a_reader_looking_at_the_lock_does_not_turn_a_writer_away(tmp_path):
    """lock_holder holds a shared lock for an instant; a RunLock taken in that instant waits."""
    import fcntl
    import threading

    files.RunLock(tmp_path, "nnfin fit").acquire().release()  # the lock file exists
    fd = os.open(tmp_path / files.LOCK_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what lock_holder does, held longer
    timer = threading.Timer(0.05, os.close, [fd])
    timer.start()
    lock = files.RunLock(tmp_path, "nnfin fit").acquire()
    timer.join()
    lock.release()
    assert files.lock_holder(tmp_path) is None
