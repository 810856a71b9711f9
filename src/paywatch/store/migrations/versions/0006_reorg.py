"""a transfer's identity is its position within its transaction, not its block-wide log index

Payments and unmatched transfers get ``tx_position`` and become unique on (network, tx hash,
tx_position): an EVM transaction re-mined in another block keeps its transfers' positions, while
their block-wide log indexes change. Existing rows are converted where the position is known
offline: native transfers (-1) and Tron logs (their log_index already counts within the
transaction). EVM token rows keep NULL; the ledger adopts them the next time it sees the transfer.
Unmatched transfers get the (network, block_number) index payments have: every scan step checks
the rows at the heights it stores against the stored block hashes.

Revision ID: 0006_reorg
Revises: 0005_ledger
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_reorg"
down_revision = "0005_ledger"
branch_labels = None
depends_on = None

TABLES = {"payments": "uq_payment_transfer", "unmatched_transfers": "uq_unmatched_transfer"}


def upgrade() -> None:
    for table, constraint in TABLES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("tx_position", sa.Integer(), nullable=True))
        op.execute(f"UPDATE {table} SET tx_position = log_index WHERE log_index < 0 OR tx_hash NOT LIKE '0x%'")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(constraint, type_="unique")
            batch_op.create_unique_constraint(constraint, ["network", "tx_hash", "tx_position"])
    op.create_index("ix_unmatched_network_block", "unmatched_transfers", ["network", "block_number"])


def downgrade() -> None:
    op.drop_index("ix_unmatched_network_block", table_name="unmatched_transfers")
    for table, constraint in TABLES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(constraint, type_="unique")
            batch_op.create_unique_constraint(constraint, ["network", "tx_hash", "log_index"])
            batch_op.drop_column("tx_position")
