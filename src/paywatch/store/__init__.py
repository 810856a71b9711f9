"""Storage: SQLModel tables, the engine, Alembic migrations."""
