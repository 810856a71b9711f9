"""HD indexes per account key; per-store shared deposit addresses; per-store reserved-amount index

Revision ID: 0005_ledger
Revises: 0004_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import paywatch.store.types

revision = "0005_ledger"
down_revision = "0004_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # address_counters stays: the first allocation of an account seeds its counter from it.
    op.create_table(
        "account_counters",
        sa.Column("account", sa.String(length=80), nullable=False),
        sa.Column("next_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "store_addresses",
        sa.Column("store_id", sa.String(length=40), nullable=False),
        sa.Column("network", sa.String(length=40), nullable=False),
        sa.Column("strategy", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("address_key", sa.String(length=64), nullable=False),
        sa.Column("derivation_index", sa.Integer(), nullable=True),
        sa.Column("created_at", paywatch.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"]),
        sa.PrimaryKeyConstraint("store_id", "network", "strategy"),
        sa.UniqueConstraint("network", "address_key", name="uq_store_address"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_store_open_amount", ["store_id", "open_amount"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_store_open_amount")
    op.drop_table("store_addresses")
    op.drop_table("account_counters")
