"""A faster ``db_url`` for the core tests: one database migrated from empty per module and backend,
emptied before every test instead of created per test.

Import ``shared_db_url`` into a test module to override conftest's ``db_url`` there; the
``engine`` and ``app_config`` fixtures then use it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import SQLModel

from paywatch.store.db import make_engine
from tests.conftest import database_params
from tests.support.databases import fresh_postgres_database, fresh_sqlite_database


@pytest.fixture(scope="module", params=database_params())
def _module_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield fresh_sqlite_database(tmp_path_factory.mktemp("core") / "paywatch.db")
        return
    yield from fresh_postgres_database()


@pytest.fixture(name="db_url")
def shared_db_url(_module_database: str) -> str:
    """The module's migrated database, with every table emptied."""
    engine = make_engine(_module_database)
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:  # DELETE, children first: faster than TRUNCATE for tables this small
        for name in tables:
            conn.exec_driver_sql(f"DELETE FROM {name}")
    engine.dispose()
    return _module_database
