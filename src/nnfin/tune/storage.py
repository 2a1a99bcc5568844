"""Where a study lives, and the gate that lets many workers share one trial budget.

``[tune] storage`` is ``sqlite`` (``tune/study.db`` inside the run folder: rerunning the same
command continues the study), a SQLAlchemy URL (``sqlite:///path.db``,
``postgresql://user:password@host:5432/db``) shared by workers on one or many machines, or
``memory`` (nothing kept). Databases get Optuna's heartbeat: a trial whose worker died is
failed after ``3 x heartbeat`` seconds of silence and queued again (up to ``retries`` times).

>>> storage_url("sqlite", Path("runs/t"))
'sqlite:///runs/t/tune/study.db'
>>> masked("postgresql://me:secret@db.example:5432/nnfin")
'postgresql://me:***@db.example:5432/nnfin'
"""

from __future__ import annotations

import hashlib
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any

from nnfin.errors import ConfigError

CONNECT_TIMEOUT_S = 5  # an unreachable database fails fast instead of hanging
SCHEMES = ("sqlite", "postgresql", "mysql")


def storage_url(storage: str, run_dir: Path | None) -> str | None:
    """The SQLAlchemy URL of ``[tune] storage`` (``None`` for ``memory``)."""
    if storage == "memory":
        return None
    if storage == "sqlite":
        if run_dir is None:
            raise ConfigError("[tune] storage = 'sqlite' keeps the study in a run folder, and there is "
                              "none here; give --storage sqlite:///path.db or postgresql://...")
        return f"sqlite:///{run_dir / 'tune' / 'study.db'}"
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if "://" not in storage or scheme not in SCHEMES:
        raise ConfigError(f"[tune] storage = {masked(storage)!r} is not a database URL; use 'sqlite', "
                          "'memory', sqlite:///path.db or postgresql://user:password@host/db")
    return storage


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and reports)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None, *, heartbeat: int = 10, retries: int = 3) -> Any:
    """An Optuna storage for ``url``; an unreachable database is a one-line :class:`ConfigError`."""
    import optuna
    import sqlalchemy.exc

    if url is None:
        return optuna.storages.InMemoryStorage()
    shown, url = masked(url), _with_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            from nnfin.files import make_dir

            make_dir(Path(db).parent, field="[tune] storage folder")
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers on one machine wait for the lock
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                        grace_period=3 * heartbeat, heartbeat_stale_trial_callback=callback)
                if url.startswith("sqlite"):
                    _write_ahead_log(storage.engine)
                return storage
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:  # workers starting together on an empty database race to
                    raise        # create the tables; the losers wait and find them made
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")
    except ImportError:
        raise ConfigError(f"[tune] storage = {shown!r} needs a database driver; for PostgreSQL: "
                          "pip install 'nnfin[postgres]' (psycopg2-binary)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"[tune] storage = {shown!r} cannot be reached: {reason}") from None


def _write_ahead_log(engine: Any) -> None:
    """SQLite in write-ahead-log mode with ``synchronous = NORMAL``: a commit appends to
    ``study.db-wal`` without waiting for the disk (the log is synced at each checkpoint), so a
    trial's dozen small writes cost microseconds instead of an fsync each (~10 ms apiece on a
    busy disk). A crash of the process loses nothing committed; a power cut may lose the last
    commits, never the database's consistency. Workers on one machine share the file as before.
    """
    import sqlalchemy

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while the tables were made: reopened with the pragmas


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3,
    nnfin's ``postgres`` extra installs psycopg2."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


class Gate:
    """Serialises "count the trials, then start one" across workers, so a fixed budget of
    trials is never overshot: a PostgreSQL advisory lock, a file lock next to a SQLite file,
    or nothing (one process). ``release`` may be called early and more than once.

    >>> with Gate() as gate:
    ...     gate.release()
    """

    def __init__(self, storage: Any = None, url: str | None = None, study: str = "") -> None:
        self.engine = getattr(storage, "engine", None)
        self.url = url or ""
        self.key = int.from_bytes(hashlib.sha256(f"nnfin:{study}".encode()).digest()[:8], "big",
                                  signed=True)
        self._held: Any = None

    def __enter__(self) -> Gate:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if self.url.startswith("postgresql") and self.engine is not None:
            from sqlalchemy import text

            conn = self.engine.connect()
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = ("pg", conn)
        elif self.url.startswith("sqlite:///") and ":memory:" not in self.url:
            from nnfin.files import FileLock

            self._held = ("file", FileLock(self.url.split(":///", 1)[1] + ".lock").acquire())

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        kind, obj = held
        if kind == "pg":
            from sqlalchemy import text

            try:
                obj.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                obj.commit()
            finally:
                obj.close()
        else:
            obj.release()
