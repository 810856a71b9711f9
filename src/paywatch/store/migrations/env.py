"""Alembic environment: runs migrations against the URL paywatch passes in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from paywatch.store import models  # noqa: F401  (registers the tables)
from paywatch.store.db import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
