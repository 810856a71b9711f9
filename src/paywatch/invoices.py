"""Invoice use cases shared by the API and the CLI: create, cancel, mark paid, list."""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Table, bindparam, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, SQLModel, col, select

from paywatch.addresses import (
    allocate_index,
    check_amount_cap,
    network_address,
    new_memo,
    store_shared_address,
    unique_amount,
)
from paywatch.audit import audit
from paywatch.config import AppConfig
from paywatch.domain.amounts import parse_amount
from paywatch.domain.matching import Strategy
from paywatch.domain.status import TERMINAL, InvoiceStatus
from paywatch.domain.transfer import address_key
from paywatch.errors import ConflictError, InputError, NotFoundError
from paywatch.inputs import check_metadata, check_text
from paywatch.ledger import Ledger
from paywatch.netguard import validate_callback_url
from paywatch.outbox import event_rows, insert_events, with_webhook_ids
from paywatch.policy import stored_heights
from paywatch.store.db import insert_rows
from paywatch.store.models import CallbackEvent, DepositAddress, Invoice, Payment, StatusHistory, Store
from paywatch.store.watch import mark_changed
from paywatch.views import invoice_view

DEFAULT_EXPIRY = timedelta(hours=24)
MIN_EXPIRY = timedelta(minutes=1)
MAX_EXPIRY = timedelta(days=30)
TARGET_ATTEMPTS = 50  # picks of a memo or unique amount before giving up under heavy concurrency
_HHMM = re.compile(r"^(?P<h>[0-9]{1,3}):(?P<m>[0-5][0-9])\Z")
_SECONDS = re.compile(r"^[0-9]{1,9}\Z")  # ASCII only: str.isdigit() also accepts "²", which int() refuses


@dataclass(frozen=True)
class InvoiceRequest:
    """What a merchant asks for; strings as received, validated by :func:`create_invoice`."""

    network: str
    asset: str
    amount: Any
    expires_in: Any = None
    order_id: str | None = None
    description: str | None = None
    customer_email: str | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    match: str | None = None


def parse_expires_in(value: Any) -> timedelta:
    """Seconds (int or digit string) or ``"HH:MM"``; between 1 minute and 30 days."""
    if value is None:
        return DEFAULT_EXPIRY
    if isinstance(value, bool):
        raise InputError('expires_in must be seconds or "HH:MM"', field="expires_in")
    if isinstance(value, int):
        # Clamp before timedelta(): a huge int overflows it (OverflowError, not a 4xx).
        span = timedelta(seconds=max(-1, min(value, int(MAX_EXPIRY.total_seconds()) + 1)))
    elif isinstance(value, str) and _SECONDS.match(value):
        span = timedelta(seconds=int(value))
    elif isinstance(value, str) and (m := _HHMM.match(value)):
        span = timedelta(hours=int(m.group("h")), minutes=int(m.group("m")))
    else:
        raise InputError('expires_in must be seconds or "HH:MM"', field="expires_in")
    if not MIN_EXPIRY <= span <= MAX_EXPIRY:
        raise InputError("expires_in must be between 1 minute and 30 days", field="expires_in")
    return span


def create_invoice(
    session: Session, config: AppConfig, store: Store, req: InvoiceRequest, now: datetime, *, height: int | None = None
) -> Invoice:
    """Validate the request, allocate the deposit target, write the invoice and its created event.

    ``height`` is the chain height now (see :func:`paywatch.health.creation_height`): the network's
    first scan starts no higher, so a payment made before any worker ran is still seen.
    """
    return issue_invoice(session, config, store, req, now, height=height)[0]


def issue_invoice(
    session: Session, config: AppConfig, store: Store, req: InvoiceRequest, now: datetime, *, height: int | None = None
) -> tuple[Invoice, dict[str, Any]]:
    """:func:`create_invoice`, and the new invoice's JSON view (the API's answer), built without a query."""
    for name in ("network", "asset", "order_id", "description", "customer_email", "callback_url"):
        check_text(getattr(req, name), name)
    if isinstance(req.amount, str):
        check_text(req.amount, "amount")
    check_metadata(req.metadata)
    network = config.networks.get(req.network)
    if network is None:
        raise InputError(
            f"unknown network {req.network!r}; configured: {', '.join(sorted(config.networks))}", field="network"
        )
    asset = network.asset(req.asset)
    if asset is None:
        raise InputError(
            f"unknown asset {req.asset!r} on {req.network}; configured: {', '.join(network.assets)}", field="asset"
        )
    amount = parse_amount(req.amount, asset.decimals)
    if amount < asset.min_units:
        raise InputError(
            f"amount is below the min_amount of {req.asset} on {network.name} ({asset.min_amount}): "
            "smaller transfers are treated as dust",
            field="amount",
        )
    expires_at = now + parse_expires_in(req.expires_in)
    try:
        strategy = Strategy(req.match) if req.match is not None else network.default_match
    except ValueError:
        raise InputError("match must be one of address, memo, amount", field="match") from None
    if strategy is Strategy.MEMO and not network.carries_memo:
        raise InputError(
            f"match: memo is not available on {network.name}: {network.family} transfers carry no memo, "
            "so such an invoice could never be paid; use address or amount",
            field="match",
        )
    if req.callback_url is not None:
        validate_callback_url(
            req.callback_url,
            allow_private=config.settings.allow_private_callbacks,
            ports=config.settings.callback_ports,
        )
    asset_key = asset.key
    invoice = Invoice(
        id="inv_" + secrets.token_hex(10),
        store_id=store.id,
        network=network.name,
        asset=req.asset,
        asset_key=asset_key,
        decimals=asset.decimals,
        amount=amount,
        match_strategy=strategy.value,
        address="",
        address_key="",
        confirmations_required=network.confirmations_required,
        status=InvoiceStatus.PENDING.value,
        expires_at=expires_at,
        created_at=now,
        created_height=height,
        updated_at=now,
        order_id=req.order_id,
        description=req.description,
        customer_email=req.customer_email,
        callback_url=req.callback_url,
        metadata_=req.metadata,
        flags=[],  # given: a default factory costs pydantic a signature parse per invoice
    )
    if strategy is Strategy.ADDRESS:
        if not network.xpub:
            raise InputError(
                f"network {network.name} has no xpub configured; cannot issue a fresh address", field="network"
            )
        index = allocate_index(session, config.networks, network)
        invoice.address = network_address(network, index)
        invoice.address_index = index
    else:
        if strategy is Strategy.AMOUNT:
            check_amount_cap(session, store.id, config.settings.max_open_amount_invoices)
        invoice.address = store_shared_address(session, config.networks, network, store.id, strategy, now)
    invoice.address_key = address_key(invoice.address)
    heights = stored_heights(session, network.name, uses_finality=network.finality is not None)
    if strategy is not Strategy.ADDRESS:
        _insert_shared_target(session, invoice, strategy, network.name, amount)
    history = _Created(status=invoice.status, at=now, reason="created")
    # A new invoice has no payments and this one history row: its view needs no query.
    view = invoice_view(invoice, [], [history], heights, network)
    events = event_rows(invoice, ["invoice.created"], now, view)  # the invoice's status_version is now 1
    history_row = {
        "invoice_id": invoice.id,
        "status": history.status,
        "status_version": 1,
        "flags": [],
        "reason": history.reason,
        "at": now,
    }
    try:
        if strategy is Strategy.ADDRESS:
            # A fresh HD index collides with nothing a second pick could avoid: no savepoint and no
            # retry; a conflict (found by the insert) fails the request with a 409.
            address_row = {
                "network": network.name,
                "address": invoice.address,
                "address_key": invoice.address_key,
                "derivation_index": invoice.address_index,
                "invoice_id": invoice.id,
                "created_at": now,
            }
            rows: list[tuple[type[SQLModel], dict[str, Any]]] = [
                (DepositAddress, address_row),
                (StatusHistory, history_row),
            ]
            rows += [(CallbackEvent, row) for row in with_webhook_ids(events)]
            insert_invoice(session, invoice, rows)
        else:
            session.flush()  # the shared-target invoice, added and flushed above, gets its status_version
            insert_rows(session, StatusHistory, [history_row])
            insert_events(session, events)
    except IntegrityError as exc:
        raise ConflictError("the deposit target was taken concurrently; retry the request") from exc
    return invoice, view


@dataclass(frozen=True)
class _Created:
    """The new invoice's first history row, as its view shows it."""

    status: str
    at: datetime
    reason: str


#: (attribute, column) of every invoice column a new invoice's INSERT writes: all but ``watch_seq``,
#: whose default the database fills in (on PostgreSQL the writer's transaction id)
_INVOICE_COLUMNS = tuple(
    (attr.key, attr.columns[0].key) for attr in sa_inspect(Invoice).column_attrs if attr.key != "watch_seq"
)


def insert_invoice(session: Session, invoice: Invoice, rows: list[tuple[type[SQLModel], dict[str, Any]]]) -> None:
    """Insert a new ``invoice`` and ``rows`` (of tables that refer to it, in that order) with Core
    statements instead of the ORM's unit of work (about a fifth of a creation's CPU in a profile),
    on PostgreSQL as one statement (data-modifying CTEs: one round trip instead of four), then
    attach the invoice to ``session`` as if it had been loaded, so that later changes to it are
    flushed as usual. The watch index sees it as it sees an ORM insert (see paywatch.store.watch):
    on PostgreSQL by the INSERT's ``watch_seq`` default, elsewhere by the stamp at the commit."""
    values = {column: getattr(invoice, attr) for attr, column in _INVOICE_COLUMNS}
    tables: list[tuple[type[SQLModel], dict[str, Any]]] = [(Invoice, values), *rows]
    if session.get_bind().dialect.name == "postgresql":
        shape, params = _shared_binds(tables)
        session.execute(_one_statement(shape), params)
    else:
        for model, row in tables:
            insert_rows(session, model, [row])
        mark_changed(session, invoice.network, (invoice.id,))
    make_transient_to_detached(invoice)
    session.add(invoice)
    session.expire(invoice, ["watch_seq"])


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


#: the values whose equal occurrences share one bind: psycopg caches its conversion of a query only
#: up to 50 parameters, and the creation's INSERT has 53 values (above it, psycopg parsed the
#: statement on every execution: 11% of a creation's CPU)
_SHAREABLE = (str, datetime)

Shape = tuple[tuple[type[SQLModel], tuple[tuple[str, int], ...]], ...]


def _shared_binds(tables: list[tuple[type[SQLModel], dict[str, Any]]]) -> tuple[Shape, dict[str, Any]]:
    """The statement's shape ((model, ((column, bind number), ...)), ...) and its parameters
    (``v<number>``): one bind for equal strings or times of the same column type (the invoice id,
    network and address the other rows repeat, the creation time), one for each other value."""
    params: dict[str, Any] = {}
    numbers: dict[tuple[str, Any], int] = {}
    shape = []
    for model, row in tables:
        table = _table(model)
        columns = []
        for name, value in row.items():
            key = (type(table.c[name].type).__name__, value)
            number = numbers.get(key) if isinstance(value, _SHAREABLE) else None
            if number is None:
                number = len(params)
                params[f"v{number}"] = value
                if isinstance(value, _SHAREABLE):
                    numbers[key] = number
            columns.append((name, number))
        shape.append((model, tuple(columns)))
    return tuple(shape), params


@functools.lru_cache(maxsize=64)
def _one_statement(shape: Shape) -> Insert:
    """One INSERT of rows of these models, all but the last in CTEs (see :func:`_shared_binds`).
    PostgreSQL runs the foreign key checks at the end of the statement, when every row is in."""
    inserts = []
    for model, columns in shape:
        table = _table(model)
        values = {name: bindparam(f"v{number}", type_=table.c[name].type) for name, number in columns}
        inserts.append(insert(table).values(values))
    *first, last = inserts
    return last.add_cte(*(statement.cte(f"new_{n}") for n, statement in enumerate(first)))


def _insert_shared_target(session: Session, invoice: Invoice, strategy: Strategy, network: str, amount: int) -> None:
    """Insert ``invoice`` with a fresh memo or unique amount on its shared address, picking again on a clash."""
    for attempt in range(1, TARGET_ATTEMPTS + 1):
        if strategy is Strategy.MEMO:
            invoice.memo = new_memo()
        else:
            invoice.amount = unique_amount(session, network, invoice.address, invoice.asset_key, amount)
            invoice.open_amount = invoice.amount
        try:
            with session.begin_nested():
                session.add(invoice)
                session.flush()
            return
        except IntegrityError as exc:
            # A concurrent request took the same memo or unique amount: its row is committed now
            # (the unique index made us wait for it), so picking again sees it and moves on.
            if attempt == TARGET_ATTEMPTS:
                raise ConflictError("the deposit target was taken concurrently; retry the request") from exc


def get_invoice(session: Session, store_id: str | None, invoice_id: str) -> Invoice:
    """The invoice, if it exists and belongs to ``store_id`` (None: any store, for admins)."""
    invoice = session.get(Invoice, invoice_id) if "\x00" not in invoice_id else None
    if invoice is None or (store_id is not None and invoice.store_id != store_id):
        raise NotFoundError(f"no invoice {invoice_id!r}", field="id")
    return invoice


def cancel_invoice(session: Session, ledger: Ledger, invoice: Invoice, now: datetime, *, actor: str) -> Invoice:
    """Cancel an invoice that has received nothing; decided under the invoice's row lock.

    A payment that is committed while the caller was looking at an older copy is seen here, and
    the cancel is refused with a 409 instead of producing a CANCELLED invoice with money on it.
    """
    invoice = ledger.lock_invoice(session, invoice.id)
    if InvoiceStatus(invoice.status) in TERMINAL:
        raise ConflictError(f"invoice is already {invoice.status}", field="status")
    if invoice.amount_paid > 0 or _has_live_payment(session, invoice.id):
        raise ConflictError("invoice has received payments; it cannot be cancelled", field="status")
    ledger.set_status(session, invoice, InvoiceStatus.CANCELLED, now, reason=f"cancelled by {actor}")
    audit(session, now, actor, "invoice.cancel", invoice.id)
    return invoice


def mark_paid(session: Session, ledger: Ledger, invoice: Invoice, now: datetime, *, actor: str) -> Invoice:
    """Complete an invoice by hand (flag ``marked_paid``); decided under the invoice's row lock."""
    invoice = ledger.lock_invoice(session, invoice.id)
    if InvoiceStatus(invoice.status) in TERMINAL:
        raise ConflictError(f"invoice is already {invoice.status}", field="status")
    ledger.set_status(
        session, invoice, InvoiceStatus.COMPLETED, now, reason=f"marked paid by {actor}", flag="marked_paid"
    )
    audit(session, now, actor, "invoice.mark_paid", invoice.id)
    return invoice


def _has_live_payment(session: Session, invoice_id: str) -> bool:
    """Any payment on the chain now, counted or not (a late one too): money was received."""
    query = select(Payment.id).where(Payment.invoice_id == invoice_id, col(Payment.orphaned).is_(False))
    return session.exec(query.limit(1)).first() is not None


def list_invoices(
    session: Session, store_id: str | None, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Invoice], str | None]:
    """Newest first; ``cursor`` is the id of the last invoice of the previous page."""
    anchor = None
    if cursor is not None:
        row = session.get(Invoice, cursor) if "\x00" not in cursor else None
        if row is None or (store_id is not None and row.store_id != store_id):
            raise InputError("cursor does not name an invoice of this store", field="cursor")
        anchor = (row.created_at, row.id)
    rows = newest_first(session, Invoice, store_id, status_filter(status), anchor, limit + 1)
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def status_filter(status: str | None) -> str | None:
    """A listing's ``status`` query value, checked (422 naming ``status``)."""
    if status is None:
        return None
    try:
        return InvoiceStatus(status).value
    except ValueError:
        raise InputError(f"unknown status {status!r}", field="status") from None


def newest_first(
    session: Session,
    model: Any,
    store_id: str | None,
    status: str | None,
    anchor: tuple[datetime, str] | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` rows of ``model`` (invoices, or fiat invoices) older than ``anchor``
    (created_at, id), newest first."""
    query = select(model)
    if store_id is not None:
        query = query.where(model.store_id == store_id)
    if status is not None:
        query = query.where(model.status == status)
    if anchor is not None:
        created, ident = anchor
        query = query.where(
            (col(model.created_at) < created) | ((col(model.created_at) == created) & (col(model.id) < ident))
        )
    return list(session.exec(query.order_by(col(model.created_at).desc(), col(model.id).desc()).limit(limit)))
