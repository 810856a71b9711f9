"""Alembic environment: runs migrations against the URL paywatch passes in."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import event
from sqlmodel import SQLModel

from paywatch.store import models  # noqa: F401  (registers the tables)
from paywatch.store.db import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = make_engine(url)
if engine.dialect.name == "sqlite":
    # SQLite alters a table by copying it and dropping the original, which foreign keys refuse while
    # other rows reference it: migrate with them off, then check that every reference still holds.
    @event.listens_for(engine, "connect")
    def _foreign_keys_off(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")


with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left {len(broken)} broken foreign key references: {broken[:5]}")
engine.dispose()
