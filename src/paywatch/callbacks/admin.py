"""Admin operations on callbacks, shared by the merchant API and the CLI.

List deliveries (with their attempt log), redeliver an event (same ``webhook-id``), queue a signed
test event, rotate a store's webhook secret with a grace period, re-enable a store's callbacks
after its endpoint answered 410. Changes are written to the audit log. ``store_id`` scopes a call to
one merchant: another store's objects are reported as not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from paywatch.audit import audit
from paywatch.callbacks.schedule import EventState
from paywatch.checkout.models import FiatInvoice
from paywatch.errors import ConflictError, InputError, NotFoundError
from paywatch.inputs import strict_json
from paywatch.outbox import new_webhook_id
from paywatch.secretbox import SecretBox
from paywatch.store.models import CallbackAttempt, CallbackEvent, Invoice, Store
from paywatch.stores import new_webhook_secret
from paywatch.views import iso

TEST_EVENT = "webhook.test"
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=30)


def attempt_view(attempt: CallbackAttempt) -> dict[str, object]:
    """One logged attempt as JSON."""
    return {
        "at": iso(attempt.at),
        "url": attempt.url,
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }


def event_view(event: CallbackEvent, attempts: list[CallbackAttempt] | None = None) -> dict[str, object]:
    """An outbox event as JSON; ``attempts`` (oldest first) when given.

    ``id`` is the opaque ``webhook-id``: the integer key orders the outbox internally and is never
    shown, as a global counter would reveal every store's traffic.
    """
    view: dict[str, object] = {
        "id": event.webhook_id,
        "webhook_id": event.webhook_id,
        "store_id": event.store_id,
        "invoice_id": event.invoice_id,
        "type": event.type,
        "status_version": event.status_version,
        "state": event.state,
        "attempt_count": event.attempts,
        "next_attempt_at": iso(event.next_attempt_at),
        "last_attempt_at": iso(event.last_attempt_at),
        "last_status_code": event.last_status_code,
        "last_error": event.last_error,
        "delivered_at": iso(event.delivered_at),
        "created_at": iso(event.created_at),
    }
    if attempts is not None:
        view["attempts"] = [attempt_view(a) for a in attempts]
    return view


def _attempts_of(session: Session, event_ids: list[int]) -> dict[int, list[CallbackAttempt]]:
    found: dict[int, list[CallbackAttempt]] = {i: [] for i in event_ids}
    if event_ids:
        rows = session.exec(
            select(CallbackAttempt)
            .where(col(CallbackAttempt.event_id).in_(event_ids))
            .order_by(col(CallbackAttempt.id))
        )
        for attempt in rows:
            found[attempt.event_id].append(attempt)
    return found


def list_deliveries(session: Session, invoice_id: str, *, store_id: str | None = None) -> list[dict[str, object]]:
    """Every callback event of an invoice (or of a fiat invoice, ``chk_...``), oldest first, each
    with its attempts."""
    fiat = invoice_id.startswith("chk_")
    invoice: Invoice | FiatInvoice | None = None
    if _plausible(invoice_id):
        invoice = session.get(FiatInvoice, invoice_id) if fiat else session.get(Invoice, invoice_id)
    if invoice is None or (store_id is not None and invoice.store_id != store_id):
        raise NotFoundError(f"invoice {invoice_id} not found", field="invoice_id")
    column = CallbackEvent.fiat_invoice_id if fiat else CallbackEvent.invoice_id
    stmt = select(CallbackEvent).where(column == invoice_id).order_by(col(CallbackEvent.id))
    events = list(session.exec(stmt))
    attempts = _attempts_of(session, [e.id for e in events if e.id is not None])
    return [event_view(e, attempts.get(e.id or 0, [])) for e in events]


def list_events(
    session: Session,
    *,
    failed_only: bool = False,
    store_id: str | None = None,
    limit: int = 100,
    with_attempts: bool = False,
) -> list[dict[str, object]]:
    """Recent events, newest first; ``failed_only`` keeps dead ones and pending ones that failed."""
    stmt = select(CallbackEvent)
    if failed_only:
        stmt = stmt.where(
            or_(
                col(CallbackEvent.state) == EventState.DEAD.value,
                (col(CallbackEvent.state) == EventState.PENDING.value) & (col(CallbackEvent.attempts) > 0),
            )
        )
    if store_id is not None:
        stmt = stmt.where(CallbackEvent.store_id == store_id)
    events = list(session.exec(stmt.order_by(col(CallbackEvent.id).desc()).limit(max(1, min(limit, 1000)))))
    if not with_attempts:
        return [event_view(e) for e in events]
    attempts = _attempts_of(session, [e.id for e in events if e.id is not None])
    return [event_view(e, attempts.get(e.id or 0, [])) for e in events]


def find_event(session: Session, delivery_id: str, *, store_id: str | None = None) -> CallbackEvent:
    """An event by its opaque id, the ``webhook-id`` (``msg_...``)."""
    key = str(delivery_id).strip()
    event = None
    if _plausible(key):
        event = session.exec(select(CallbackEvent).where(CallbackEvent.webhook_id == key)).first()
    if event is None or (store_id is not None and event.store_id != store_id):
        raise NotFoundError(f"callback delivery {key} not found", field="delivery_id")
    return event


def _plausible(key: str) -> bool:
    """Ids are short printable ASCII; anything else (a NUL byte breaks PostgreSQL) is simply unknown."""
    return 0 < len(key) <= 64 and key.isascii() and key.isprintable()


def _store(session: Session, store_id: str) -> Store:
    store = session.get(Store, store_id) if _plausible(store_id) else None
    if store is None:
        raise NotFoundError(f"store {store_id} not found", field="store")
    return store


def redeliver(
    session: Session, delivery_id: str, now: datetime, *, store_id: str | None = None, actor: str = "admin"
) -> CallbackEvent:
    """Queue another attempt of an event now, with the same ``webhook-id`` and body.

    A dead event gets one more attempt (it is dead again if that fails); a pending one is moved
    forward; a delivered one is sent again.
    """
    event = find_event(session, delivery_id, store_id=store_id)
    store = _store(session, event.store_id)
    if store.callbacks_disabled_at is not None:
        raise ConflictError(
            f"callbacks of store {store.id} are disabled since {iso(store.callbacks_disabled_at)} "
            "(the endpoint answered 410); re-enable them first",
            field="delivery_id",
            code="callbacks_disabled",
        )
    previous = event.state
    event.state = EventState.PENDING.value
    event.next_attempt_at = now
    session.add(event)
    audit(session, now, actor, "callback.redeliver", event.webhook_id, event_id=event.id, previous_state=previous)
    session.flush()
    return event


def send_test_event(session: Session, store_id: str, now: datetime, *, actor: str = "admin") -> CallbackEvent:
    """Queue a signed ``webhook.test`` event to the store's callback URL."""
    store = _store(session, store_id)
    if not store.callback_url:
        raise ConflictError(f"store {store.id} has no callback URL", field="store", code="no_callback_url")
    body = strict_json(
        {"type": TEST_EVENT, "timestamp": iso(now), "data": {"store_id": store.id, "message": "paywatch test event"}}
    )
    event = CallbackEvent(
        webhook_id=new_webhook_id(),
        store_id=store.id,
        invoice_id=None,
        type=TEST_EVENT,
        status_version=0,
        body=body,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(event)
    audit(session, now, actor, "callback.test", store.id)
    session.flush()
    return event


@dataclass(frozen=True)
class RotatedSecret:
    """The new secret (shown once) and until when the previous one still signs."""

    store_id: str
    webhook_secret: str
    previous_valid_until: datetime | None


def rotate_secret(
    session: Session,
    store_id: str,
    now: datetime,
    *,
    grace: timedelta = DEFAULT_GRACE,
    actor: str = "admin",
    box: SecretBox | None = None,
) -> RotatedSecret:
    """Replace the store's secret; the old one keeps signing (beside the new) for ``grace``.

    The new secret is stored sealed by ``box`` when given; the returned one is the plaintext.
    """
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InputError("grace period must be between 0 and 30 days", field="grace")
    store = _store(session, store_id)
    until = now + grace if grace > timedelta(0) else None
    store.webhook_secret_previous = store.webhook_secret if until is not None else None
    store.webhook_secret_previous_until = until
    secret = new_webhook_secret()
    store.webhook_secret = box.seal(secret) if box is not None else secret
    session.add(store)
    audit(session, now, actor, "store.rotate_secret", store.id, previous_valid_until=iso(until))
    session.flush()
    return RotatedSecret(store.id, secret, until)


def disabled_stores(session: Session) -> list[dict[str, object]]:
    """Stores whose callbacks are switched off because their endpoint answered 410 Gone."""
    rows = session.exec(
        select(Store).where(col(Store.callbacks_disabled_at).is_not(None)).order_by(col(Store.callbacks_disabled_at))
    )
    return [
        {"store_id": s.id, "name": s.name, "callback_url": s.callback_url, "disabled_at": iso(s.callbacks_disabled_at)}
        for s in rows
    ]


def enable_callbacks(session: Session, store_id: str, now: datetime, *, actor: str = "admin") -> Store:
    """Lift the 410 switch-off; the store's pending events become due now."""
    store = _store(session, store_id)
    if store.callbacks_disabled_at is not None:
        details = {"disabled_at": iso(store.callbacks_disabled_at)}
        store.callbacks_disabled_at = None
        session.add(store)
        session.exec(
            update(CallbackEvent)
            .where(col(CallbackEvent.store_id) == store.id, col(CallbackEvent.state) == EventState.PENDING.value)
            .values(next_attempt_at=now)
        )
        audit(session, now, actor, "callbacks.enabled", store.id, **details)
        session.flush()
    return store
