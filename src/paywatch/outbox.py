"""Write callback events into the transactional outbox, in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Protocol

from sqlmodel import Session, col, select

from paywatch.config import NetworkConfig
from paywatch.inputs import strict_json
from paywatch.policy import stored_heights
from paywatch.store.db import insert_rows
from paywatch.store.models import CallbackEvent, Invoice, Payment, StatusHistory
from paywatch.views import invoice_view, iso

_ID_BYTES = 12


def new_webhook_id() -> str:
    return new_webhook_ids(1)[0]


def new_webhook_ids(count: int) -> list[str]:
    """``count`` fresh webhook ids from one read of the system's random source (each read lets
    other threads take the interpreter lock; a range's events can number in the hundreds)."""
    raw = secrets.token_bytes(_ID_BYTES * count)
    return ["msg_" + raw[i : i + _ID_BYTES].hex() for i in range(0, len(raw), _ID_BYTES)]


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


def emit(
    session: Session,
    invoice: Invoice,
    event_types: list[str],
    now: datetime,
    network: NetworkConfig,
    *,
    view: dict[str, Any] | None = None,
) -> None:
    """Append one outbox row per event; each bumps ``status_version`` so receivers can order them.

    ``view``: the invoice JSON as :func:`load_view` would read it now, when the caller has it.
    """
    if not event_types:
        return
    if view is None:
        session.flush()
        view = load_view(session, invoice, network)
    insert_events(session, event_rows(invoice, event_types, now, view))
    session.add(invoice)


def insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert rows made by :func:`event_rows` in one statement, each with a fresh webhook id."""
    if not rows:
        return
    insert_rows(session, CallbackEvent, with_webhook_ids(rows))


def with_webhook_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (made by :func:`event_row`), each given a fresh webhook id."""
    for row, webhook_id in zip(rows, new_webhook_ids(len(rows)), strict=True):
        row["webhook_id"] = webhook_id
    return rows


class EventOwner(Protocol):
    """What an outbox row is about: a crypto invoice, or a fiat-priced one (``fiat=True``)."""

    id: str
    store_id: str
    status_version: int


def event_row(
    owner: EventOwner, event_type: str, now: datetime, data: dict[str, Any], status_version: int, *, fiat: bool = False
) -> dict[str, Any]:
    """One outbox row (without its webhook id, which :func:`insert_events` adds)."""
    return {
        "store_id": owner.store_id,
        "invoice_id": None if fiat else owner.id,
        "fiat_invoice_id": owner.id if fiat else None,
        "type": event_type,
        "status_version": status_version,
        "body": strict_json({"type": event_type, "timestamp": iso(now), "data": data}),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def event_rows(
    invoice: EventOwner, event_types: list[str], now: datetime, view: dict[str, Any], *, fiat: bool = False
) -> list[dict[str, Any]]:
    """The outbox rows of ``event_types`` for ``invoice`` (whose JSON is ``view``), bumping its
    ``status_version`` once per event, for :func:`insert_events` (which adds their webhook ids);
    callers may collect many invoices' rows and insert them at once."""
    rows = []
    for event_type in event_types:
        invoice.status_version += 1
        view["status_version"] = invoice.status_version
        rows.append(event_row(invoice, event_type, now, view, invoice.status_version, fiat=fiat))
    return rows
