"""Merchant endpoints for status callbacks: the delivery log of an invoice, and redelivery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from paywatch.api.deps import Context, CurrentStore, DbSession
from paywatch.api.schemas import ERROR_RESPONSES
from paywatch.callbacks import admin

router = APIRouter(tags=["callbacks"], responses=ERROR_RESPONSES)
InvoiceId = Annotated[str, Path(max_length=64, description="Invoice id (inv_...)")]
DeliveryId = Annotated[str, Path(max_length=64, description="The delivery's id, its webhook-id (msg_...)")]


class CallbackAttemptOut(BaseModel):
    """One delivery attempt: when, what came back, how long it took, the first KB of the answer."""

    at: str | None
    url: str
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None


class CallbackOut(BaseModel):
    """One callback event (delivery) and where it stands; ``id`` is its opaque, stable ``webhook_id``."""

    id: str
    webhook_id: str
    store_id: str
    invoice_id: str | None
    type: str
    status_version: int
    state: str
    attempt_count: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    created_at: str | None
    attempts: list[CallbackAttemptOut] | None = None


class CallbackList(BaseModel):
    """The callbacks of one invoice, oldest first, each with its attempts."""

    data: list[CallbackOut]


@router.get(
    "/v1/invoices/{invoice_id}/callbacks",
    response_model=CallbackList,
    summary="List an invoice's callbacks and their delivery attempts",
)
def list_callbacks(invoice_id: InvoiceId, store: CurrentStore, session: DbSession) -> dict[str, Any]:
    return {"data": admin.list_deliveries(session, invoice_id, store_id=store.id)}


@router.post(
    "/v1/callbacks/{delivery_id}/redeliver",
    status_code=202,
    response_model=CallbackOut,
    summary="Send a callback again (same webhook-id), as soon as the dispatcher runs",
)
def redeliver(delivery_id: DeliveryId, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    now = context.clock()
    context.rate_limits().redeliveries.take(store.id, now)
    event = admin.redeliver(session, delivery_id, now, store_id=store.id, actor=f"api:{store.id}")
    return admin.event_view(event)
