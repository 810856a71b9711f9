"""Write callback events into the transactional outbox, in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from paywatch.config import NetworkConfig
from paywatch.inputs import strict_json
from paywatch.policy import stored_heights
from paywatch.store.models import CallbackEvent, Invoice, Payment, StatusHistory
from paywatch.views import invoice_view, iso


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(12)


def load_view(session: Session, invoice: Invoice, network: NetworkConfig) -> dict[str, Any]:
    """The invoice JSON, read fresh from the session (used by the API and the outbox)."""
    payments = list(session.exec(select(Payment).where(Payment.invoice_id == invoice.id).order_by(col(Payment.id))))
    history = list(
        session.exec(
            select(StatusHistory).where(StatusHistory.invoice_id == invoice.id).order_by(col(StatusHistory.id))
        )
    )
    heights = stored_heights(session, invoice.network, uses_finality=network.finality is not None)
    return invoice_view(invoice, payments, history, heights, network)


def emit(session: Session, invoice: Invoice, event_types: list[str], now: datetime, network: NetworkConfig) -> None:
    """Append one outbox row per event; each bumps ``status_version`` so receivers can order them."""
    if not event_types:
        return
    session.flush()
    session.add_all(new_events(invoice, event_types, now, load_view(session, invoice, network)))
    session.add(invoice)


def new_events(invoice: Invoice, event_types: list[str], now: datetime, data: dict[str, Any]) -> list[CallbackEvent]:
    """The outbox rows of ``event_types`` (not added to a session), ``data`` being the invoice's view.

    Each bumps ``invoice.status_version``; ``data["status_version"]`` follows, so afterwards ``data``
    is the view as of the last event.
    """
    rows = []
    for event_type in event_types:
        invoice.status_version += 1
        data["status_version"] = invoice.status_version
        body = strict_json({"type": event_type, "timestamp": iso(now), "data": data})
        rows.append(
            CallbackEvent(
                webhook_id=new_webhook_id(),
                store_id=invoice.store_id,
                invoice_id=invoice.id,
                type=event_type,
                status_version=invoice.status_version,
                body=body,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return rows
