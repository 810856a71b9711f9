"""Fresh, migrated test databases, made fast: each test process migrates one template per backend
and every test gets its own copy of it.

* SQLite: the template is a file migrated through Alembic once; a test's database is a byte copy
  of it (the template is closed and checkpointed, so the copy is complete).
* PostgreSQL: the template is a database migrated through Alembic once per test process (xdist
  worker); a test's database is ``CREATE DATABASE ... TEMPLATE`` of it, a real database of its
  own. ``DROP DATABASE`` forces a checkpoint on PostgreSQL 15, so the drop is handed to a
  background thread of the process, which drops what is queued in batches, concurrently, so that
  they share checkpoints (it still uses ``WITH (FORCE)``, so a connection left open cannot keep
  the database alive); ``finish()`` waits for the queued drops and drops the template.

The copy is what ``upgrade(url)`` on an empty database produces, table for table, because it is
the result of exactly that call; nothing is shared between two tests' databases.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from paywatch.store.db import normalize_url, upgrade
from tests.support.ports import worker_id

PG_URL = os.environ.get("PAYWATCH_TEST_DATABASE_URL")

_lock = threading.Lock()
_sqlite_template: Path | None = None
_pg_template: str | None = None
_drops: queue.Queue[str | None] = queue.Queue()
_dropper: threading.Thread | None = None
_DROPS_AT_ONCE = 8

#: SQL condition on ``pg_stat_activity``: the client connections to the current database other than
#: the one asking (a test's view of what the code under test holds open)
OTHER_CLIENT_BACKENDS = (
    "datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


# --------------------------------------------------------------------------- SQLite


def fresh_sqlite_database(path: Path) -> str:
    """A migrated, empty SQLite database at ``path`` (a copy of this process's template); its URL."""
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            template = Path(tempfile.mkdtemp(prefix=f"pw-template-{worker_id()}-")) / "migrated.db"
            upgrade(f"sqlite:///{template}")
            for suffix in ("-wal", "-shm", "-journal"):  # closed: everything is in the main file
                side = template.with_name(template.name + suffix)
                assert not side.exists() or side.stat().st_size == 0, side
            _sqlite_template = template
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- PostgreSQL


def _admin_url() -> str:
    assert PG_URL is not None
    return make_url(normalize_url(PG_URL)).set(drivername="postgresql").render_as_string(hide_password=False)


def _url_of(name: str) -> str:
    assert PG_URL is not None
    return make_url(normalize_url(PG_URL)).set(database=name).render_as_string(hide_password=False)


def _execute(sql: str) -> None:
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  # our own names: pw_test_<worker>_<hex>, pw_tpl_...


def _drop(name: str) -> None:
    with contextlib.suppress(psycopg.Error):  # the server went away; nothing left to clean
        _execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_loop() -> None:
    """Drop the queued databases: all those queued by now at once, each on a connection of its own.

    Every ``DROP DATABASE`` waits for a checkpoint, and drops that wait together share one: eight
    drops one after the other took 23-25 s (2 cores, load ~15), eight at once 2-3.4 s. While a
    batch is dropped the next tests queue theirs, so the batches grow when the drops lag.
    """
    while True:
        batch = [_drops.get()]
        while True:
            try:
                batch.append(_drops.get_nowait())
            except queue.Empty:
                break
        names = [name for name in batch if name is not None]
        try:
            if names:
                with ThreadPoolExecutor(max_workers=min(len(names), _DROPS_AT_ONCE)) as pool:
                    list(pool.map(_drop, names))
        finally:
            for _ in batch:
                _drops.task_done()
        if None in batch:
            return


def _template() -> str:
    """This process's migrated template database (created on first use)."""
    global _pg_template, _dropper
    with _lock:
        if _pg_template is None:
            name = f"pw_tpl_{worker_id()}_{secrets.token_hex(5)}"
            _execute(f'CREATE DATABASE "{name}"')
            upgrade(_url_of(name))  # its engine is disposed: no connection stays on the template
            _pg_template = name
            _dropper = threading.Thread(target=_drop_loop, name="drop-test-databases", daemon=True)
            _dropper.start()
        return _pg_template


def fresh_postgres_database() -> Iterator[str]:
    """A migrated, empty PostgreSQL database of its own (a generator: yields its URL, then drops it)."""
    template = _template()
    name = f"pw_test_{worker_id()}_{secrets.token_hex(5)}"  # per xdist worker: easy to tell apart
    _execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _url_of(name)
    finally:
        _drops.put(name)


def finish() -> None:
    """Wait for the queued drops, then drop the template and remove the SQLite one (session end)."""
    global _pg_template, _sqlite_template, _dropper
    if _dropper is not None:
        _drops.put(None)
        _dropper.join()
        _dropper = None
    if _pg_template is not None:
        _execute(f'DROP DATABASE IF EXISTS "{_pg_template}" WITH (FORCE)')
        _pg_template = None
    if _sqlite_template is not None:
        shutil.rmtree(_sqlite_template.parent, ignore_errors=True)
        _sqlite_template = None
