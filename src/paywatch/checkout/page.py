"""The pay page's data: the public JSON (no merchant-only fields), QR codes, first-view tracking."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import segno
from sqlmodel import Session

from paywatch.checkout.models import FiatInvoice
from paywatch.outbox import event_row, insert_events
from paywatch.views import iso

PUBLIC_PAYMENT_FIELDS = (
    "id",
    "currency",
    "crypto_amount",
    "fiat_amount",
    "rate",
    "address",
    "memo",
    "payment_uri",
    "status",
    "amount_paid",
    "confirmations_required",
    "rate_locked_until",
    "expires_at",
)
PUBLIC_TX_FIELDS = ("tx_hash", "amount", "confirmations", "state", "explorer_url")


def qr_svg(uri: str) -> str:
    """An inline SVG QR code of ``uri`` (segno; no external request)."""
    code = segno.make(uri, error="m", micro=False)
    return str(code.svg_inline(scale=6, border=4, dark="#000", light="#fff", omitsize=True))


def public_view(full: dict[str, Any]) -> dict[str, Any]:
    """What the payer's browser may see of a fiat invoice view."""
    payments = []
    for payment in full["payments"]:
        item = {key: payment[key] for key in PUBLIC_PAYMENT_FIELDS}
        item["transactions"] = [{key: tx[key] for key in PUBLIC_TX_FIELDS} for tx in payment["transactions"]]
        item["qr_svg"] = qr_svg(payment["payment_uri"])
        payments.append(item)
    return {
        "status": full["status"],
        "price": full["price"],
        "remaining": full["remaining"],
        "paid": full["paid"],
        "expires_at": full["expires_at"],
        "redirect_url": full["redirect_url"] if full["status"] == "COMPLETED" else None,
        "payments": payments,
    }


def mark_viewed(session: Session, invoice: FiatInvoice, now: datetime) -> bool:
    """Set ``viewed_at`` on the first view and queue an ``invoice.viewed`` event to the merchant."""
    if invoice.viewed_at is not None:
        return False
    invoice.viewed_at = now
    session.add(invoice)
    data = {"id": invoice.id, "order_id": invoice.order_id, "status": invoice.status, "viewed_at": iso(now)}
    insert_events(session, [event_row(invoice, "invoice.viewed", now, data, 0, fiat=True)])
    return True


def script_json(value: Any) -> str:
    """JSON safe to place inside a ``<script type="application/json">`` element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
