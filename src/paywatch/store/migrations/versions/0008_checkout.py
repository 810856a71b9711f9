"""hosted checkout: fiat-priced invoices and their payment attempts

Revision ID: 0008_checkout
Revises: 0007_utxo
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paywatch.store.types import Amount, UTCDateTime

revision = "0008_checkout"
down_revision = "0007_utxo"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fiat_invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("store_id", sa.String(40), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("exponent", sa.Integer(), nullable=False),
        sa.Column("total", Amount(), nullable=False),
        sa.Column("discount", Amount(), nullable=False),
        sa.Column("tax", Amount(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("currencies", sa.JSON(), nullable=False),
        sa.Column("redirect_url", sa.String(2048), nullable=True),
        sa.Column("note", sa.String(1000), nullable=True),
        sa.Column("order_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("paid", Amount(), nullable=False),
        sa.Column("confirmed", Amount(), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("viewed_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_fiat_invoice_store_created", "fiat_invoices", ["store_id", "created_at"])
    op.create_table(
        "payment_attempts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("fiat_invoice_id", sa.String(40), sa.ForeignKey("fiat_invoices.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.String(40), sa.ForeignKey("invoices.id"), nullable=False, unique=True),
        sa.Column("currency", sa.String(64), nullable=False),
        sa.Column("rate", sa.String(80), nullable=False),
        sa.Column("rate_sources", sa.String(200), nullable=False),
        sa.Column("fiat_amount", Amount(), nullable=False),
        sa.Column("locked_until", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("fiat_invoice_id", "number", name="uq_payment_attempt_number"),
    )
    op.create_index("ix_payment_attempts_fiat_invoice_id", "payment_attempts", ["fiat_invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_payment_attempts_fiat_invoice_id", table_name="payment_attempts")
    op.drop_table("payment_attempts")
    op.drop_index("ix_fiat_invoice_store_created", table_name="fiat_invoices")
    op.drop_table("fiat_invoices")
