"""Process start-up shared by every entry point: config once, engine, schema check."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from paywatch.errors import ConfigError
from paywatch.store.db import alembic_config, make_engine, session_scope, upgrade
from paywatch.stores import encrypt_stored_secrets


def seal_secrets(config: AppConfig, engine: Engine) -> int:
    """Encrypt (or re-encrypt under the first key) every stored webhook secret when a key is set.

    Part of the migration path: ``paywatch db upgrade`` runs it, and so does every start on SQLite.
    """
    box = config.settings.secret_box()
    if not box.enabled:
        return 0
    with session_scope(engine) as session:
        return encrypt_stored_secrets(session, box)


def open_database(config: AppConfig) -> Engine:
    """An engine on an up-to-date schema: SQLite is migrated in place; PostgreSQL must be upgraded
    explicitly (``paywatch db upgrade``) so that replicas never race on a migration."""
    url = config.settings.database_url
    if url.startswith("sqlite"):
        upgrade(url)
        engine = make_engine(url)
        seal_secrets(config, engine)
        return engine
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
