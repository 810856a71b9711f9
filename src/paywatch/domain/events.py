"""Which callback events a change produces. Pure: compares before and after."""

from __future__ import annotations

from collections.abc import Iterable

from paywatch.domain.status import InvoiceStatus

STATUS_EVENTS: dict[InvoiceStatus, str] = {
    InvoiceStatus.WAITING_FOR_CONFIRMATIONS: "invoice.waiting_for_confirmations",
    InvoiceStatus.PARTIAL: "invoice.partial",
    InvoiceStatus.COMPLETED: "invoice.completed",
    InvoiceStatus.EXPIRED: "invoice.expired",
    InvoiceStatus.PARTIALLY_EXPIRED: "invoice.partially_expired",
    InvoiceStatus.CANCELLED: "invoice.cancelled",
}

#: sent when status or flags change and no more specific event describes it (a flag added after
#: COMPLETED, say): every new ``status_version`` reaches the merchant as an event.
UPDATED = "invoice.updated"

EVENT_TYPES: tuple[str, ...] = (
    "invoice.created",
    UPDATED,
    "invoice.payment_received",
    "invoice.payment_late",
    "invoice.payment_reverted",
    "invoice.payment_restored",
    *STATUS_EVENTS.values(),
)


def change_events(
    before: InvoiceStatus,
    after: InvoiceStatus,
    *,
    new_payments_late: Iterable[bool] = (),
    reverted: int = 0,
    restored: int = 0,
) -> list[str]:
    """Events in delivery order: payments first, then reverts and restores, then the status change.

    A move back to PENDING has no event of its own: the revert event reports it. A payment that
    a reorg removed and that is then re-mined is restored: ``invoice.payment_restored``.
    """
    events = ["invoice.payment_late" if late else "invoice.payment_received" for late in new_payments_late]
    if reverted:
        events.append("invoice.payment_reverted")
    if restored:
        events.append("invoice.payment_restored")
    if after != before and after in STATUS_EVENTS:
        events.append(STATUS_EVENTS[after])
    return events
