"""Partial indexes for the confirmation refresh of every scan step and the expiry sweep (issue 14's 1M proof)

``Ledger.refresh_confirmations`` runs in every scan step. Its query (status WAITING_FOR_CONFIRMATIONS,
or seen and confirmed sums apart, or a maturing payment) was an OR no index answered: PostgreSQL
read every invoice of the network, 0.6 s a step at 1,000,000 open invoices. Now:

* ``ix_invoice_unconfirmed``: the invoices with unconfirmed payments only (partial index);
* ``st_invoice_unconfirmed`` (PostgreSQL): statistics on that predicate, so that the planner knows
  how few rows it holds (it otherwise takes ``amount_paid <> amount_confirmed`` for 99.5% of rows);
* ``ix_payment_maturing``: the not-orphaned payments still maturing (coinbase outputs) only;
* ``ix_invoice_reserved_expires``: the invoices holding a unique amount, by deadline, for the
  expiry sweep's release of expired ones (it read every entry of ix_invoice_status_expires: 22 ms
  at 1,000,000 invoices, 0.03 ms now).

The predicates are word for word those of paywatch.store.models.unconfirmed and maturing_payment.

Revision ID: 0014_scale1m
Revises: 0013_clockhigh
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_scale1m"
down_revision = "0013_clockhigh"
branch_labels = None
depends_on = None

_UNCONFIRMED = "(status = 'WAITING_FOR_CONFIRMATIONS' OR amount_paid != amount_confirmed) IS {true}"
_MATURING = "maturity > 0 AND orphaned IS {false}"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    true, false = ("true", "false") if postgres else ("1", "0")
    unconfirmed = sa.text(_UNCONFIRMED.format(true=true))
    maturing = sa.text(_MATURING.format(false=false))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoice_unconfirmed",
            ["network", "id"],
            unique=False,
            postgresql_where=unconfirmed,
            sqlite_where=unconfirmed,
        )
        reserved = sa.text("open_amount IS NOT NULL")
        batch_op.create_index(
            "ix_invoice_reserved_expires",
            ["expires_at"],
            unique=False,
            postgresql_where=reserved,
            sqlite_where=reserved,
        )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_maturing",
            ["network", "invoice_id"],
            unique=False,
            postgresql_where=maturing,
            sqlite_where=maturing,
        )
    if postgres:
        op.execute(
            "CREATE STATISTICS st_invoice_unconfirmed "
            "ON ((status = 'WAITING_FOR_CONFIRMATIONS' OR amount_paid != amount_confirmed)) FROM invoices"
        )
        op.execute("ANALYZE invoices")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_invoice_unconfirmed")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_maturing")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_reserved_expires")
        batch_op.drop_index("ix_invoice_unconfirmed")
