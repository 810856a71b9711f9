"""Process start-up shared by every entry point: config once, engine, schema check."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from paywatch.errors import ConfigError
from paywatch.store.db import alembic_config, make_engine, upgrade


def open_database(config: AppConfig) -> Engine:
    """An engine on an up-to-date schema: SQLite is migrated in place; PostgreSQL must be upgraded
    explicitly (``paywatch db upgrade``) so that replicas never race on a migration."""
    url = config.settings.database_url
    if url.startswith("sqlite"):
        upgrade(url)
        return make_engine(url)
    engine = make_engine(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        engine.dispose()
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, the code needs {head}: run `paywatch db upgrade`"
        )
    return engine
