"""watch_versions and invoices.watch_seq: O(1) change detection for the scanners' watch index

Every commit that changes what matching sees of a network (a new invoice, a released unique
amount, a new store address; ``*``: a store's late window) bumps that network's row in
``watch_versions`` and stamps the changed invoices with the new version. A scanner compares one
primary-key row per step instead of counting the network's invoices, and loads only the invoices
stamped above the version it has seen. Invoices stored before this revision keep NULL and are
loaded by full builds only.

Revision ID: 0010_watchindex
Revises: 0009_operator
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_watchindex"
down_revision = "0010_checkout2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watch_versions",
        sa.Column("network", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("network"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("watch_seq", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_invoice_network_watch_seq", ["network", "watch_seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_network_watch_seq")
        batch_op.drop_column("watch_seq")
    op.drop_table("watch_versions")
