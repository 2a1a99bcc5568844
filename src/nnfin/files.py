"""The one place nnfin writes files: atomic, never over a file without ``force``, faults as one line.

Every file nnfin writes - run folders, checkpoints, model files, predictions, reports, plots,
datasets - goes through :func:`replacing` (or the helpers built on it):

* the content goes to a temporary file in the target's folder (``.NAME.HOST.PID-XXXX.nnfin-tmp``),
  created with mode ``0o666`` so the umask applies as for any other file, then fsynced;
* an existing target is refused unless ``force=True`` (``--force``): the error names the file;
  without ``force`` the temporary file is hard-linked into place, so a file that appears
  meanwhile is not replaced either;
* with ``force`` the target is swapped in one ``os.replace``: a reader - or a kill -9 at any
  instant - sees the old file or the new one, never a mix;
* an ``OSError`` (disk full, permission denied, read-only file system, quota) becomes one
  :class:`~nnfin.errors.WriteError` line naming the path; the temporary file is removed and the
  target is left as it was;
* temporary files of processes that died (kill -9, power loss) are removed by the next write in
  that folder.

:class:`RunLock` is the run folder's lock: an OS file lock (``flock``) on ``.nnfin.lock`` that a
process holds while it writes the folder; a second process is refused with the holder's pid.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> write_text(out, "hello\\n")
PosixPath('...notes.txt')
>>> write_text(out, "again\\n")
Traceback (most recent call last):
...
nnfin.errors.WriteError: file '...notes.txt' already exists; pass --force (force=True) to replace it
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nnfin.errors import RunFolderBusy, WriteError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

TMP_SUFFIX = ".nnfin-tmp"
LOCK_NAME = ".nnfin.lock"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})\.(?P<pid>\d+)-[0-9a-f]+" + re.escape(TMP_SUFFIX) + "$")

# OSError numbers turned into words users know
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOENT: "a folder on the path does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EFBIG: "the file is too large for this file system",
    errno.EIO: "input/output error",
}


def _label(path: Path, field: str | None) -> str:
    return f"{field} {str(path)!r}" if field else f"file {str(path)!r}"


def _exists(path: Path, field: str | None) -> WriteError:
    how = "--force" if field and field.startswith("--") else "--force (force=True)"
    return WriteError(f"{_label(path, field)} already exists; pass {how} to replace it")


def os_error(exc: OSError, path: str | Path, *, field: str | None = None, doing: str = "write") -> WriteError:
    """One line for an ``OSError`` met while writing ``path``: what, where and that nothing changed.

    >>> str(os_error(OSError(28, "No space left on device"), "runs/a/model.json"))
    "cannot write file 'runs/a/model.json': no space left on device (ENOSPC); nothing was changed"
    """
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = _REASONS.get(exc.errno or -1) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    where = _label(Path(path), field)
    return WriteError(f"cannot {doing} {where}: {reason}" + (f" ({code})" if code else "")
                      + "; nothing was changed")


def check_target(path: str | Path, *, force: bool = False, field: str | None = None,
                 suffixes: tuple[str, ...] | None = None, folder_exists: bool = False) -> Path:
    """Refuse a target nnfin must not write: a folder, a dangling symlink, or (unless ``force``)
    an existing file; with ``suffixes``, a name without one of them; with ``folder_exists``, a
    path whose folder is missing. Call it before long work, so a refusal comes first:
    :func:`replacing` checks again when it commits. The one check of every output path.

    >>> check_target("plot.jpg", field="--out", suffixes=(".png", ".svg"))
    Traceback (most recent call last):
    ...
    nnfin.errors.WriteError: --out 'plot.jpg': file type '.jpg' is not one of .png, .svg
    """
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise WriteError(f"{_label(p, field)}: file type {p.suffix or '(none)'!r} is not one of "
                         f"{', '.join(suffixes)}")
    if p.is_symlink() and not p.exists():
        raise WriteError(f"{_label(p, field)} is a symbolic link to {os.readlink(p)!r}, which does not "
                         "exist; remove the link or choose another path")
    if p.is_dir():
        raise WriteError(f"{_label(p, field)} is a folder; give a file path")
    if p.exists() and not force:
        raise _exists(p, field)
    if p.parent.exists() and not p.parent.is_dir():
        raise WriteError(f"{_label(p, field)}: {str(p.parent)!r} is a file, not a folder")
    if folder_exists and not p.parent.exists():
        raise WriteError(f"{_label(p, field)}: folder {str(p.parent)!r} does not exist")
    return p


def make_dir(path: str | Path, *, field: str | None = None, exist_ok: bool = True) -> bool:
    """Create a folder (and its parents); ``True`` if it was made, ``False`` if it existed.

    With ``exist_ok=False`` an existing folder is not an error either: the answer is ``False``
    (how a caller claims a fresh auto-named folder). A file in the way or an ``OSError`` becomes
    one :class:`WriteError` line.
    """
    p = Path(path)
    try:
        if not p.parent.is_dir():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir()
    except FileExistsError:
        if not p.is_dir():
            raise WriteError(f"{field + ' ' if field else 'folder '}{str(p)!r} cannot be created: a "
                             "file of that name is in the way") from None
        return False
    except OSError as exc:
        raise os_error(exc, p, field=field or "folder", doing="create") from None
    return True


def remove(path: str | Path) -> bool:
    """Remove a file nnfin wrote, or an empty folder nnfin made; ``False`` if it was not there
    (or a folder is not empty: nothing of the user's is ever removed)."""
    p = Path(path)
    try:
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    except OSError:
        return False
    return True


def rename(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` over ``dst`` in one step (same folder); an ``OSError`` is one line."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise os_error(exc, dst) from None


def sweep(folder: str | Path) -> list[Path]:
    """Remove temporary files that processes of this machine left behind when they died."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name) if entry.name.endswith(TMP_SUFFIX) else None
        if m is None or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


def _fsync(path: Path, *, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        if folder:
            return  # folders cannot be opened for fsync on every platform
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask (read without changing it where the OS tells: Linux)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), \
            open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(tmp: Path) -> None:
    """Give the file the mode a plain ``open`` would (some libraries create theirs 0600)."""
    mode = 0o666 & ~umask()
    if tmp.stat().st_mode & 0o777 != mode:
        os.chmod(tmp, mode)


def _commit(tmp: Path, target: Path, force: bool, field: str | None) -> None:
    """Put ``tmp`` at ``target``: ``os.replace`` with ``force``, else a link that fails if taken."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists(target, field) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists():  # no hard links here: check, then rename
            raise _exists(target, field) from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def replacing(path: str | Path, *, force: bool = False, field: str | None = None,
              parents: bool = True, before_commit: Callable[[], Any] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path`` (atomically).

    ``force`` allows replacing an existing file; ``parents`` creates missing folders (else a
    missing folder is an error); ``before_commit`` runs once the new content is complete and on
    disk, just before it takes the target's place (checkpoint rotation). On any failure the
    temporary file is removed and ``path`` is untouched; an ``OSError`` becomes a one-line
    :class:`WriteError`.

    >>> with replacing("out/table.csv") as tmp:  # doctest: +SKIP
    ...     frame.to_csv(tmp, index=False)
    """
    target = check_target(path, force=force, field=field)
    folder = target.parent
    if parents:
        make_dir(folder)
    elif not folder.is_dir():
        raise WriteError(f"{_label(target, field)}: folder {str(folder)!r} does not exist")
    sweep(folder)
    tmp = folder / f".{target.name[:150]}.{_HOST}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    except OSError as exc:
        raise os_error(exc, target, field=field) from None
    try:
        yield tmp
        _follow_umask(tmp)
        _fsync(tmp)
        if before_commit is not None:
            before_commit()
        _commit(tmp, target, force, field)
        _fsync(folder, folder=True)
    except OSError as exc:
        raise os_error(exc, target, field=field) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes, *, force: bool = False, field: str | None = None,
                parents: bool = True, before_commit: Callable[[], Any] | None = None) -> Path:
    """Write ``data`` to ``path`` through :func:`replacing`; returns the path."""
    with replacing(path, force=force, field=field, parents=parents, before_commit=before_commit) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    return Path(path)


def write_text(path: str | Path, text: str, *, force: bool = False, field: str | None = None,
               parents: bool = True) -> Path:
    """Write UTF-8 ``text`` (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), force=force, field=field, parents=parents)


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for NumPy scalars and paths (the one copy nnfin uses)."""
    import numpy as np

    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | Path, obj: Any, *, force: bool = False, field: str | None = None) -> Path:
    """Write ``obj`` as indented JSON (NumPy scalars and paths allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n", force=force,
                      field=field)


def write_with(path: str | Path, writer: Callable[[Path], Any], *, force: bool = False,
               field: str | None = None, parents: bool = True) -> Path:
    """Let ``writer(tmp_path)`` (a library's own save function) write the file, then commit it."""
    with replacing(path, force=force, field=field, parents=parents) as tmp:
        writer(tmp)
    return Path(path)


FRAME_SUFFIXES = (".csv", ".parquet", ".pq")


def write_frame(path: str | Path, frame: pd.DataFrame, *, force: bool = False, field: str | None = None,
                parents: bool = True, **options: Any) -> Path:
    """Write a DataFrame as CSV or Parquet (by the suffix); ``options`` go to pandas."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise WriteError(f"{_label(p, field)}: unsupported file type {suffix or '(none)'!r}; "
                         "use .csv or .parquet")
    options.setdefault("index", False)
    if suffix == ".csv":
        return write_with(p, lambda tmp: frame.to_csv(tmp, **options), force=force, field=field,
                          parents=parents)
    options.pop("float_format", None)
    return write_with(p, lambda tmp: frame.to_parquet(tmp, **options), force=force, field=field,
                      parents=parents)


FIGURE_DPI = 120  # dots per inch of saved figures (``nnfin.plots.layout`` measures text at it)
PNG_COMPRESSION = 3  # zlib level: ~30 % faster to write than the default 6; files 10-50 % larger


def save_figure(fig: Figure, path: str | Path, *, force: bool = True, field: str | None = None,
                dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    p = Path(path)
    fmt = p.suffix.lstrip(".").lower() or "png"
    options: dict[str, Any] = {"pil_kwargs": {"compress_level": PNG_COMPRESSION}} if fmt == "png" else {}
    try:
        return write_with(p, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, **options), force=force,
                          field=field)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- run-folder lock


class RunLock:
    """An exclusive OS lock on a run folder, held while this process writes it.

    Re-entrant within one process (a resume that rebuilds its trainer takes it once more).
    Released by :meth:`release`, at the end of a ``with`` block, or when the process ends
    (the OS drops ``flock`` locks of a dead process: a kill -9 never leaves a stale lock).

    >>> with RunLock("runs/my-run", "nnfin resume"):  # doctest: +SKIP
    ...     ...
    """

    _held: ClassVar[dict[str, tuple[int, int]]] = {}  # folder -> (fd, depth), this process's locks

    def __init__(self, folder: str | Path, command: str = "nnfin") -> None:
        self.folder, self.command = Path(folder), command
        self._key = os.path.realpath(self.folder)

    def acquire(self) -> RunLock:
        held = RunLock._held.get(self._key)
        if held is not None:
            RunLock._held[self._key] = (held[0], held[1] + 1)
            return self
        path = self.folder / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise os_error(exc, path, field="run folder lock", doing="create") from None
        try:
            _lock_soon(fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"run folder {str(self.folder)!r} is in use by {holder}; wait for it "
                                "to finish (or stop it) and try again") from None
        except OSError:
            pass  # file systems without locks: proceed unlocked rather than refuse every run
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {self.command}\n".encode(), 0)
        RunLock._held[self._key] = (fd, 1)
        return self

    def release(self) -> None:
        held = RunLock._held.get(self._key)
        if held is None:
            return
        fd, depth = held
        if depth > 1:
            RunLock._held[self._key] = (fd, depth - 1)
            return
        del RunLock._held[self._key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the lock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - no flock on Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(str(exc)) from None
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_soon(fd: int, tries: int = 10, pause: float = 0.02) -> None:
    """:func:`_lock`, tried a few times over ~0.2 s: a reader that only looks who holds the lock
    (:func:`lock_holder`) holds it for an instant, and must not turn a writer away."""
    for attempt in range(tries):
        try:
            return _lock(fd)
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(pause)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if len(text) >= 3:
        return f"process {text[0]} on {text[1]} ({' '.join(text[2:])})"
    return "another process"


def lock_holder(folder: str | Path) -> str | None:
    """Who holds the run folder's :class:`RunLock` (``"process 123 on host (nnfin fit)"``), or
    ``None`` when nobody does. Creates and changes no file; it takes a shared lock for an
    instant (a writer starting in that instant waits for it: :meth:`RunLock.acquire` tries again
    for ~0.2 s before it calls a folder busy).

    >>> lock_holder("runs/my-run")  # doctest: +SKIP
    'process 4242 on box (nnfin fit)'
    """
    if sys.platform == "win32":  # pragma: no cover - no flock on Windows
        return None
    import fcntl

    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a shared lock taken above
    return None


class FileLock:
    """A blocking exclusive lock on ``path`` (created if missing): waits for the holder.

    For short critical sections shared by processes, e.g. creating a study in one SQLite file.

    >>> with FileLock("runs/s1/tune/study.db.lock"):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise os_error(exc, self.path, field="lock file", doing="create") from None
        if sys.platform != "win32":
            import fcntl

            with contextlib.suppress(OSError):  # file systems without locks: go on unlocked
                fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
