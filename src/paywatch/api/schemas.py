"""Request and response bodies of the merchant API (they also drive the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from paywatch.inputs import text_problem

DecimalString = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["25.5"])


class InvoiceCreate(BaseModel):
    """POST /v1/invoices. ``amount`` is a decimal string in asset units, never a JSON number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    network: str = Field(min_length=1, max_length=40, examples=["tron"])
    asset: str = Field(min_length=1, max_length=20, examples=["USDT"])
    amount: str = Field(min_length=1, max_length=100, examples=["25.5"])
    expires_in: int | str | None = Field(
        default=None, description='Seconds, or "HH:MM"; 1 minute to 30 days; default 24 h', examples=[3600, "02:00"]
    )
    order_id: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    customer_email: str | None = Field(default=None, max_length=320)
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, Any] | None = None
    match: Literal["address", "memo", "amount"] | None = None

    @field_validator("network", "asset", "amount", "order_id", "description", "customer_email", "callback_url")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        problem = None if value is None else text_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class PaymentOut(BaseModel):
    """A transfer credited (or once credited) to an invoice."""

    tx_hash: str
    log_index: int
    from_address: str
    amount: str = DecimalString
    block_number: int
    block_hash: str
    block_time: str | None
    confirmations: int
    state: Literal["seen", "confirmed", "orphaned"]
    late: bool
    explorer_url: str | None


class HistoryOut(BaseModel):
    """One step of the status history."""

    status: str
    at: str | None
    reason: str


class InvoiceOut(BaseModel):
    """An invoice as GET returns it and as every callback's ``data`` carries it."""

    id: str
    store_id: str
    status: Literal[
        "PENDING", "WAITING_FOR_CONFIRMATIONS", "PARTIAL", "PARTIALLY_EXPIRED", "EXPIRED", "COMPLETED", "CANCELLED"
    ]
    status_version: int
    flags: list[str]
    network: str
    asset: str
    amount: str = DecimalString
    amount_paid: str = DecimalString
    amount_pending: str = DecimalString
    amount_due: str = DecimalString
    address: str
    memo: str | None
    match: Literal["address", "memo", "amount"]
    payment_uri: str
    confirmations_required: int
    expires_at: str | None
    created_at: str | None
    updated_at: str | None
    order_id: str | None
    description: str | None
    customer_email: str | None
    callback_url: str | None
    metadata: dict[str, Any]
    payments: list[PaymentOut]
    history: list[HistoryOut]


class FiatMoney(BaseModel):
    """A fiat amount: a decimal string in the currency's units and its ISO 4217 code."""

    amount: str = DecimalString
    currency: str


class FiatInvoiceOut(BaseModel):
    """A fiat-priced invoice (hosted checkout, id ``chk_...``): ``GET /v1/invoices/chk_...`` and the
    ``data`` of its callbacks. ``payments`` are its payment attempts (see docs/checkout.md)."""

    id: str
    store_id: str
    status: str
    status_version: int
    flags: list[str]
    price: FiatMoney
    remaining: FiatMoney
    paid: FiatMoney
    currencies: list[str]
    items: list[dict[str, Any]]
    discount: str
    tax: str
    invoice_url: str
    redirect_url: str | None
    note: str | None
    order_id: str | None
    expires_at: str | None
    created_at: str | None
    updated_at: str | None
    viewed_at: str | None
    payments: list[dict[str, Any]]


class InvoiceList(BaseModel):
    """A page of invoices, newest first; pass ``next_cursor`` as ``cursor`` for the next page.

    ``kind=crypto`` (the default) lists crypto invoices only; ``fiat`` and ``all`` list fiat ones too."""

    data: list[InvoiceOut | FiatInvoiceOut]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    """What went wrong and which field it concerns."""

    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed request",
        401: "Missing or wrong API key",
        404: "Not found (or owned by another store)",
        409: "Not allowed in the invoice's current state",
        413: "Body too large",
        422: "Invalid field",
        429: "Too many requests for this store; see Retry-After",
        503: "Temporarily unavailable",
    }.items()
}
