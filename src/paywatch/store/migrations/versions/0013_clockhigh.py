"""network_states.clock_high: the chain clock's high-water mark

Expiry is judged by the timestamp of the scanner's cursor block. A reorg moves the cursor back to an
older block; without a high-water mark the clock went back with it, and re-evaluating an invoice
whose window had already closed (its payment orphaned) opened the window again (EXPIRED or
PARTIALLY_EXPIRED back to PENDING). Rows start NULL: the cursor block's own timestamp applies until
the cursor next moves forward.

Revision ID: 0013_clockhigh
Revises: 0012_buildtime
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paywatch.store.types import UTCDateTime

revision = "0013_clockhigh"
down_revision = "0012_buildtime"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_high", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("network_states", schema=None) as batch_op:
        batch_op.drop_column("clock_high")
