"""indexes the scanner's watch-index fingerprint reads in O(log n)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_network_created", ["network", "created_at"], unique=False)
        batch_op.create_index("ix_invoice_network_open_amount", ["network", "open_amount"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_network_open_amount")
        batch_op.drop_index("ix_invoice_network_created")
