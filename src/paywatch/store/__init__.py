"""Storage: SQLModel tables, the engine, Alembic migrations."""

# The watch version session events must be registered in every process that writes invoices.
from paywatch.store import watch as watch
