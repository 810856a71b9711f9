"""Who may scan a network: one replica at a time.

PostgreSQL: a session-level advisory lock per network, held on a dedicated connection. When the
holder dies its connection closes, PostgreSQL releases the lock, and another replica takes it on
its next poll. SQLite: one worker per database file, enforced with an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import IO
from weakref import WeakKeyDictionary

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from paywatch.errors import ConfigError


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"paywatch:{name}".encode()).digest()[:8], "big", signed=True)


_direct_engines: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()
_direct_lock = threading.Lock()


def _direct_engine(engine: Engine) -> Engine:
    """An engine on the same database whose connections bypass ``engine``'s pool.

    A lease holds its connection for as long as the replica scans: taken from the shared pool,
    one per network plus the sweep would starve the scans, the dispatcher and the API of
    connections (the pool's default is 5 + 10 overflow).
    """
    with _direct_lock:
        direct = _direct_engines.get(engine)
        if direct is None:
            direct = create_engine(engine.url, poolclass=NullPool)
            _direct_engines[engine] = direct
        return direct


class Lease:
    """The right to run one singleton job (a network's scan, the expiry sweep), held until released
    or until this process dies. Without PostgreSQL there is one worker, so it is always held.

    On PostgreSQL each lease keeps one dedicated connection (outside the engine's pool) on which it
    tries ``pg_try_advisory_lock`` and, once it holds the lock, confirms the session is alive.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = lock_key(name)
        self._conn: Connection | None = None
        self._locked = False
        self.postgres = engine.dialect.name == "postgresql"

    @property
    def held(self) -> bool:
        return self._locked or not self.postgres

    def acquire(self) -> bool:
        """Take or confirm the lease; False when another replica holds it."""
        if not self.postgres:
            return True
        if self._locked:
            try:
                assert self._conn is not None
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except Exception:  # the lease connection died: the lock is gone with it
                self._drop()
        try:
            if self._conn is None:
                self._conn = _direct_engine(self.engine).connect()
            got = self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one()
            self._conn.commit()
        except Exception:
            self._drop()
            raise
        self._locked = bool(got)
        return self._locked

    def release(self) -> None:
        """Give the lease up (and close its connection)."""
        if self._conn is None:
            return
        try:
            if self._locked:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
        finally:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._locked = False
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # closing a dead connection may raise; it is gone either way
                pass


class SingleWorkerLock:
    """On SQLite only one worker may run per database file; a second one refuses to start."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.path: Path | None = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self.path = Path(str(url.database)).resolve().with_suffix(".worker.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock (again: a no-op), or raise ConfigError naming the worker that holds it."""
        if self.path is None or self._file is not None:
            return
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the worker
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"another paywatch worker ({holder}) already runs on this SQLite database ({self.path.stem}); "
                "SQLite supports one worker: stop it, or use PostgreSQL to run several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
