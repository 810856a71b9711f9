"""utxo: mempool sightings, BIP125 replaceability and coinbase maturity on payments; the store's RBF policy

Revision ID: 0007_utxo
Revises: 0006_reorg
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_utxo"
down_revision = "0006_reorg"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mempool", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("replaceable", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("maturity", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("accept_replaceable_mempool", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("accept_replaceable_mempool")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("maturity")
        batch_op.drop_column("replaceable")
        batch_op.drop_column("mempool")
