"""Tables of hosted checkout: fiat-priced invoices and their payment attempts.

Fiat amounts are integers in the currency's minor units (cents). A payment attempt owns one
ordinary crypto invoice (``invoice_id``), created by the existing invoice code, which the scanners
match and confirm as usual; the fiat invoice sums its attempts through ``domain.checkout``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, Session, SQLModel

from paywatch.store.types import Amount, UTCDateTime

if TYPE_CHECKING:
    from paywatch.store.models import Invoice

#: the metadata key of a payment attempt's crypto invoice that names its fiat invoice
ATTEMPT_METADATA_KEY = "fiat_invoice_id"


class FiatInvoice(SQLModel, table=True):
    """An invoice priced in fiat, paid through one or more attempts in the payer's chosen currency."""

    __tablename__ = "fiat_invoices"
    __table_args__ = (
        Index("ix_fiat_invoice_store_created", "store_id", "created_at"),
        Index("ix_fiat_invoice_status_expires", "status", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    store_id: str = Field(foreign_key="stores.id", max_length=40)
    slug: str = Field(unique=True, max_length=64)
    currency: str = Field(max_length=8)
    exponent: int
    total: int = Field(sa_type=Amount)
    discount: int = Field(sa_type=Amount, default=0)
    tax: int = Field(sa_type=Amount, default=0)
    items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    currencies: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    redirect_url: str | None = Field(default=None, max_length=2048)
    note: str | None = Field(default=None, max_length=1000)
    order_id: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=32)
    status_version: int = 0  # bumped by every callback event of this invoice, as for crypto invoices
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    paid: int = Field(sa_type=Amount, default=0)
    confirmed: int = Field(sa_type=Amount, default=0)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    viewed_at: datetime | None = Field(sa_type=UTCDateTime, default=None)


class PaymentAttempt(SQLModel, table=True):
    """One payer's choice of currency: the crypto invoice it opened and the rate locked for it."""

    __tablename__ = "payment_attempts"
    __table_args__ = (UniqueConstraint("fiat_invoice_id", "number", name="uq_payment_attempt_number"),)

    id: str = Field(primary_key=True, max_length=40)
    fiat_invoice_id: str = Field(foreign_key="fiat_invoices.id", index=True, max_length=40)
    number: int  # 1, 2, ... within its fiat invoice: the order attempts were opened in
    invoice_id: str = Field(foreign_key="invoices.id", unique=True, max_length=40)
    currency: str = Field(max_length=64)
    rate: str = Field(max_length=80)
    rate_sources: str = Field(max_length=200)
    fiat_amount: int = Field(sa_type=Amount)
    locked_until: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


class AttemptChange(SQLModel, table=True):
    """A crypto invoice of a payment attempt changed (payment, confirmation, revert, expiry, manual
    move): written by the ledger in the same transaction, consumed by the worker, which then
    re-evaluates the attempt's fiat invoice (:func:`paywatch.checkout.followup.settle`)."""

    __tablename__ = "attempt_changes"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)

    @staticmethod
    def note(session: Session, invoice: Invoice, now: datetime) -> None:
        """Queue ``invoice``'s fiat invoice for re-evaluation if it is a payment attempt's (the
        worker checks the ``payment_attempts`` table; a merchant's look-alike metadata is a no-op)."""
        if ATTEMPT_METADATA_KEY in invoice.metadata_:
            session.add(AttemptChange(invoice_id=invoice.id, created_at=now))


class StoredRate(SQLModel, table=True):
    """One aggregated rate as fetched: ``price`` is a decimal string (fiat per whole asset unit)."""

    __tablename__ = "rates"
    __table_args__ = (Index("ix_rates_pair_fetched", "asset", "fiat", "fetched_at"),)

    id: int | None = Field(default=None, primary_key=True)
    asset: str = Field(max_length=20)
    fiat: str = Field(max_length=8)
    price: str = Field(max_length=80)
    sources: str = Field(max_length=200)
    fetched_at: datetime = Field(sa_type=UTCDateTime, index=True)


class StoreLogo(SQLModel, table=True):
    """A store's logo for its pay pages: PNG or JPEG bytes, checked on upload, served same-origin."""

    __tablename__ = "store_logos"

    store_id: str = Field(primary_key=True, foreign_key="stores.id", max_length=40)
    content_type: str = Field(max_length=20)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)
    width: int
    height: int
    updated_at: datetime = Field(sa_type=UTCDateTime)
