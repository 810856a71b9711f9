"""invoices.watch_seq defaults to the writing transaction's id on PostgreSQL

A new invoice is stamped by its own INSERT (see paywatch.store.watch), not by an UPDATE of the row
just written before its commit: that second statement wrote a second row version (the column is
indexed, so every index of the table took a new entry too). SQLite keeps no default: there the
commit stamps the network's counter.

Revision ID: 0015_apifast
Revises: 0014_scale1m
"""

from __future__ import annotations

from alembic import op

revision = "0015_apifast"
down_revision = "0014_scale1m"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE invoices ALTER COLUMN watch_seq SET DEFAULT (pg_current_xact_id()::text::bigint)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE invoices ALTER COLUMN watch_seq DROP DEFAULT")
