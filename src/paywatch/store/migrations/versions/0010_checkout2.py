"""hosted checkout, part 2: shared rate history, fiat-invoice callbacks, attempt changes, store logos

Revision ID: 0010_checkout2
Revises: 0009_operator
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paywatch.store.types import UTCDateTime

revision = "0010_checkout2"
down_revision = "0009_operator"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("fiat", sa.String(8), nullable=False),
        sa.Column("price", sa.String(80), nullable=False),
        sa.Column("sources", sa.String(200), nullable=False),
        sa.Column("fetched_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rates_pair_fetched", "rates", ["asset", "fiat", "fetched_at"])
    op.create_index("ix_rates_fetched_at", "rates", ["fetched_at"])
    op.create_table(
        "attempt_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "store_logos",
        sa.Column("store_id", sa.String(40), sa.ForeignKey("stores.id"), primary_key=True),
        sa.Column("content_type", sa.String(20), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("fiat_invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_fiat_invoice_status_expires", "fiat_invoices", ["status", "expires_at"])
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fiat_invoice_id", sa.String(40), nullable=True))
    op.create_index("ix_callback_events_fiat_invoice_id", "callback_events", ["fiat_invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_callback_events_fiat_invoice_id", table_name="callback_events")
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.drop_column("fiat_invoice_id")
    op.drop_index("ix_fiat_invoice_status_expires", table_name="fiat_invoices")
    with op.batch_alter_table("fiat_invoices", schema=None) as batch_op:
        batch_op.drop_column("status_version")
    op.drop_table("store_logos")
    op.drop_table("attempt_changes")
    op.drop_index("ix_rates_fetched_at", table_name="rates")
    op.drop_index("ix_rates_pair_fetched", table_name="rates")
    op.drop_table("rates")
