"""Who may scan a network: one replica at a time.

PostgreSQL: a session-level advisory lock per network, held on a dedicated connection. When the
holder dies its connection closes, PostgreSQL releases the lock, and another replica takes it on
its next poll. SQLite: one worker per database file, enforced with an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

from paywatch.errors import ConfigError


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"paywatch:{name}".encode()).digest()[:8], "big", signed=True)


class Lease:
    """The right to run one singleton job (a network's scan, the expiry sweep), held until released
    or until this process dies. Without PostgreSQL there is one worker, so it is always held."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = lock_key(name)
        self._conn: Connection | None = None
        self.postgres = engine.dialect.name == "postgresql"

    @property
    def held(self) -> bool:
        return self._conn is not None or not self.postgres

    def acquire(self) -> bool:
        """Take or confirm the lease; False when another replica holds it."""
        if not self.postgres:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # the lease connection died: the lock is gone with it
                self._drop()
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()
        finally:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
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
        if self.path is None:
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
