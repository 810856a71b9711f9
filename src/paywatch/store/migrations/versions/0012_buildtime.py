"""invoices: index (network, created_at, id), the order a watch index build pages in

A build reads a network's invoices in pages of (created_at, id): the order they were written
in, so each page reads a stretch of the table. It replaces the index on (network, created_at),
which it serves as well.

Revision ID: 0012_buildtime
Revises: 0011_watchindex
"""

from __future__ import annotations

from alembic import op

revision = "0012_buildtime"
down_revision = "0011_watchindex"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_network_created_id", ["network", "created_at", "id"], unique=False)
        batch_op.drop_index("ix_invoice_network_created")


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_network_created", ["network", "created_at"], unique=False)
        batch_op.drop_index("ix_invoice_network_created_id")
