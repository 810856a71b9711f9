"""payments an admin attached count even when late; a store's policy version for the scanners

Revision ID: 0004_policy
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_policy"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admitted", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("policy_version")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("admitted")
