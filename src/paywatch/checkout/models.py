"""Tables of hosted checkout: fiat-priced invoices and their payment attempts.

Fiat amounts are integers in the currency's minor units (cents). A payment attempt owns one
ordinary crypto invoice (``invoice_id``), created by the existing invoice code, which the scanners
match and confirm as usual; the fiat invoice sums its attempts through ``domain.checkout``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from paywatch.store.types import Amount, UTCDateTime


class FiatInvoice(SQLModel, table=True):
    """An invoice priced in fiat, paid through one or more attempts in the payer's chosen currency."""

    __tablename__ = "fiat_invoices"
    __table_args__ = (Index("ix_fiat_invoice_store_created", "store_id", "created_at"),)

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
