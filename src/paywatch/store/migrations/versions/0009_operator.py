"""invoices.created_height: the chain height when the invoice was created

A network's first scan never starts above the lowest such height among its open invoices, so an
invoice created and paid before any worker scanned its network is still credited.

Revision ID: 0009_operator
Revises: 0008_checkout
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_operator"
down_revision = "0008_checkout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_height", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("created_height")
