"""block numbers and heights as 64-bit integers (PostgreSQL INTEGER stops at 2**31-1)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "payments": ["block_number"],
    "unmatched_transfers": ["block_number"],
    "scanned_blocks": ["number"],
    "network_states": ["cursor_height", "tip_height", "final_height"],
}
NOT_NULL = {("payments", "block_number"), ("unmatched_transfers", "block_number"), ("scanned_blocks", "number")}


def _alter(to: sa.types.TypeEngine[int], was: sa.types.TypeEngine[int]) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column, existing_type=was, type_=to, existing_nullable=(table, column) not in NOT_NULL
                )


def upgrade() -> None:
    _alter(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())
