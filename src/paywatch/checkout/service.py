"""Fiat-invoice use cases: create, open a payment attempt at a locked rate, re-evaluate, view.

A payment attempt is an ordinary crypto invoice made by :func:`paywatch.invoices.create_invoice`
(the same allocation of address, memo or unique amount), linked to the fiat invoice. The fiat
status is decided by :func:`paywatch.domain.checkout.evaluate_fiat` over all attempts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from paywatch.checkout.models import ATTEMPT_METADATA_KEY, FiatInvoice, PaymentAttempt
from paywatch.config import AppConfig
from paywatch.domain.amounts import format_amount
from paywatch.domain.checkout import (
    AttemptFacts,
    AttemptPayment,
    FiatDecision,
    Item,
    check_total,
    evaluate_fiat,
    fiat_events,
    fiat_exponent,
    from_minor,
    to_minor,
)
from paywatch.domain.rates import Rate, fiat_to_units
from paywatch.domain.status import TERMINAL, InvoiceStatus, is_confirmed
from paywatch.errors import ConflictError, InputError, NotFoundError
from paywatch.health import require_fresh
from paywatch.inputs import check_text
from paywatch.invoices import InvoiceRequest, create_invoice, newest_first, parse_expires_in, status_filter
from paywatch.outbox import event_rows, insert_events, load_view
from paywatch.policy import store_policy, stored_heights
from paywatch.store.models import Invoice, Payment, Store
from paywatch.views import iso

DEFAULT_LOCK = timedelta(minutes=15)
MIN_ATTEMPT_WINDOW = timedelta(minutes=1)
MAX_ITEMS = 100
MAX_FIAT_DIGITS = 15  # integer digits of a fiat amount; beyond is a typo or an attack
MAX_ATTEMPTS = 20  # per fiat invoice: the page is public, so each attempt's deposit target is bounded


class Rates(Protocol):
    """What checkout needs from the rate book."""

    def known_fiat(self, code: str) -> bool: ...
    def current(self, asset: str, fiat: str, now: datetime) -> Rate: ...
    def at(self, asset: str, fiat: str, when: datetime) -> Rate | None: ...


@dataclass(frozen=True)
class CheckoutSettings:
    """Checkout options: the rate-lock window, the public base URL of the pay page, development mode."""

    lock_window: timedelta = DEFAULT_LOCK
    public_url: str = "http://127.0.0.1:8000"
    development: bool = False


@dataclass(frozen=True)
class FiatInvoiceRequest:
    """A fiat-priced invoice as received (validated by :func:`create_fiat_invoice`)."""

    price: Any
    currencies: Any
    items: Any = None
    discount: Any = None
    tax: Any = None
    redirect_url: Any = None
    note: Any = None
    order_id: Any = None
    expires_in: Any = None


def _money(value: Any, exponent: int, name: str, *, allow_zero: bool = True) -> int:
    if not isinstance(value, str):
        raise InputError(f'{name} must be a decimal string such as "29.99"', field=name)
    check_text(value, name)
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise InputError(f'{name} must be a decimal string such as "29.99"', field=name) from None
    if amount.is_finite() and amount.adjusted() >= MAX_FIAT_DIGITS:
        raise InputError(f"{name} is too large (at most {MAX_FIAT_DIGITS} integer digits)", field=name)
    if not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} amount", field=name)
    try:
        return to_minor(amount, exponent)
    except ValueError:
        raise InputError(f"{name} has more than {exponent} decimal places", field=name) from None


def _currency(config: AppConfig, value: Any, name: str) -> tuple[str, str]:
    """``"network:ASSET"`` -> (network, asset), both configured, else a 422 naming ``name``."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise InputError(f'{name} must look like "tron:USDT"', field=name)
    network_name, asset = value.split(":")
    network = config.networks.get(network_name)
    if network is None or network.asset(asset) is None:
        raise InputError(f"{name}: unknown currency {value!r}", field=name)
    return network_name, asset


def _items(value: Any, exponent: int) -> tuple[tuple[Item, ...], list[dict[str, Any]]]:
    if value is None:
        return (), []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InputError(f"items must be a list of at most {MAX_ITEMS} lines", field="items")
    items: list[Item] = []
    stored: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        where = f"items[{i}]"
        if not isinstance(raw, dict) or set(raw) - {"description", "quantity", "unit_price"}:
            raise InputError(f"{where} must have description, quantity and unit_price", field=where)
        description = raw.get("description")
        if not isinstance(description, str) or not description.strip() or len(description) > 200:
            raise InputError(f"{where}.description must be 1..200 characters", field=f"{where}.description")
        check_text(description, f"{where}.description")
        quantity = raw.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity <= 1_000_000:
            raise InputError(f"{where}.quantity must be an integer > 0", field=f"{where}.quantity")
        unit = _money(raw.get("unit_price"), exponent, f"{where}.unit_price")
        items.append(Item(description, quantity, unit))
        stored.append({"description": description, "quantity": quantity, "unit_price": unit})
    return tuple(items), stored


def create_fiat_invoice(
    session: Session,
    config: AppConfig,
    store: Store,
    req: FiatInvoiceRequest,
    now: datetime,
    rates: Rates,
    settings: CheckoutSettings,
) -> FiatInvoice:
    """Validate a fiat-priced invoice and store it; attempts are opened later by the payer."""
    if not isinstance(req.price, dict) or set(req.price) != {"amount", "currency"}:
        raise InputError('price must be {"amount": "29.99", "currency": "USD"}', field="price")
    code = req.price["currency"]
    if not isinstance(code, str) or not code.isascii() or not code.isalpha() or not rates.known_fiat(code):
        raise InputError(f"price.currency: unknown fiat currency {code!r}", field="price.currency")
    code = code.upper()
    exponent = fiat_exponent(code)
    total = _money(req.price["amount"], exponent, "price.amount", allow_zero=False)
    if not isinstance(req.currencies, list) or not req.currencies or len(req.currencies) > 20:
        raise InputError('currencies must be a non-empty list such as ["tron:USDT"]', field="currencies")
    for i, currency in enumerate(req.currencies):
        _currency(config, currency, f"currencies[{i}]")
    items, stored_items = _items(req.items, exponent)
    discount = _money(req.discount, exponent, "discount") if req.discount is not None else 0
    tax = _money(req.tax, exponent, "tax") if req.tax is not None else 0
    wrong = check_total(total, items, discount, tax)
    if wrong is not None:
        raise InputError(f"{wrong}: the total must equal the items' subtotal - discount + tax", field=wrong)
    if req.redirect_url is not None:
        _check_redirect(req.redirect_url, settings.development)
    for name in ("note", "order_id"):
        value = getattr(req, name)
        if value is not None and (not isinstance(value, str) or len(value) > (1000 if name == "note" else 200)):
            raise InputError(f"{name} must be a string", field=name)
        check_text(value, name)
    invoice = FiatInvoice(
        id="chk_" + secrets.token_hex(10),
        store_id=store.id,
        slug=secrets.token_urlsafe(24),
        currency=code,
        exponent=exponent,
        total=total,
        discount=discount,
        tax=tax,
        items=stored_items,
        currencies=list(dict.fromkeys(req.currencies)),
        redirect_url=req.redirect_url,
        note=req.note,
        order_id=req.order_id,
        status=InvoiceStatus.PENDING.value,
        flags=[],
        expires_at=now + parse_expires_in(req.expires_in),
        created_at=now,
        updated_at=now,
    )
    session.add(invoice)
    session.flush()
    return invoice


def _check_redirect(url: Any, development: bool) -> None:
    if not isinstance(url, str) or len(url) > 2048:
        raise InputError("redirect_url must be a URL", field="redirect_url")
    check_text(url, "redirect_url")
    parts = urlsplit(url)
    allowed = {"https", "http"} if development else {"https"}
    if parts.scheme not in allowed or not parts.netloc:
        raise InputError("redirect_url must be an https URL (http only in development mode)", field="redirect_url")


def get_fiat_invoice(session: Session, store_id: str | None, invoice_id: str) -> FiatInvoice:
    """The fiat invoice of ``store_id`` (None: any store), or a 404 that tells nothing more."""
    invoice = session.get(FiatInvoice, invoice_id) if "\x00" not in invoice_id else None
    if invoice is None or (store_id is not None and invoice.store_id != store_id):
        raise NotFoundError(f"no invoice {invoice_id!r}", field="id")
    return invoice


def by_slug(session: Session, slug: str) -> FiatInvoice | None:
    """The fiat invoice behind a public page slug."""
    if "\x00" in slug or len(slug) > 64:
        return None
    return session.exec(select(FiatInvoice).where(FiatInvoice.slug == slug)).first()


def attempts_of(session: Session, invoice: FiatInvoice) -> list[tuple[PaymentAttempt, Invoice]]:
    """The invoice's attempts, oldest first, each with its crypto invoice."""
    rows = session.exec(
        select(PaymentAttempt, Invoice)
        .where(PaymentAttempt.fiat_invoice_id == invoice.id)
        .where(col(PaymentAttempt.invoice_id) == col(Invoice.id))
        .order_by(col(PaymentAttempt.number))
    )
    return [(a, i) for a, i in rows]


def lock_fiat(session: Session, invoice_id: str) -> FiatInvoice | None:
    """The fiat invoice row, locked for update until the transaction ends (PostgreSQL), re-read.

    Every re-evaluation takes this lock first (the API's reads and attempts, the worker), so a
    change is decided, and its callback events written, exactly once. The ledger never holds it:
    crypto invoices are locked (in id order) by the ledger, fiat invoices only after them (in id
    order) by the worker, never the other way round.
    """
    stmt = (
        select(FiatInvoice)
        .where(FiatInvoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.exec(stmt).first()


def reevaluate(
    session: Session,
    config: AppConfig,
    rates: Rates,
    settings: CheckoutSettings,
    invoice: FiatInvoice,
    now: datetime,
) -> FiatDecision:
    """Lock, recompute the fiat status from every attempt's payments, persist what changed and
    queue its callback events (same envelope and signing as a crypto invoice's)."""
    lock_fiat(session, invoice.id)
    store = session.get(Store, invoice.store_id)
    assert store is not None
    attempts: list[AttemptFacts] = []
    for attempt, crypto in attempts_of(session, invoice):
        network = config.networks[crypto.network]
        heights = stored_heights(session, crypto.network, uses_finality=network.finality is not None)
        payments = session.exec(select(Payment).where(Payment.invoice_id == crypto.id).order_by(col(Payment.id)))
        facts = []
        for p in payments:
            late_rate = None
            if p.block_time > attempt.locked_until:
                sample = rates.at(crypto.asset, invoice.currency, p.block_time)
                late_rate = sample.price if sample is not None else None
            facts.append(
                AttemptPayment(
                    key=f"{crypto.network}:{p.tx_hash}:{p.log_index}",
                    amount=p.amount if p.asset_key == crypto.asset_key else 0,
                    block_time=p.block_time,
                    confirmed=is_confirmed(p.block_number, crypto.confirmations_required, heights),
                    succeeded=p.asset_key == crypto.asset_key,
                    orphaned=p.orphaned,
                    admitted=p.admitted,
                    block_time_rate=late_rate,
                )
            )
        attempts.append(AttemptFacts(crypto.decimals, Decimal(attempt.rate), attempt.locked_until, tuple(facts)))
    result = evaluate_fiat(
        invoice.total,
        invoice.exponent,
        invoice.expires_at,
        InvoiceStatus(invoice.status),
        frozenset(invoice.flags),
        tuple(attempts),
        now,
        store_policy(store),
    )
    decision = result.decision
    state = (decision.status.value, sorted(decision.flags), decision.seen, decision.confirmed)
    if state != (invoice.status, sorted(invoice.flags), invoice.paid, invoice.confirmed):
        moved = state[:2] != (invoice.status, sorted(invoice.flags))
        events = fiat_events(InvoiceStatus(invoice.status), decision.status, invoice.paid, decision.seen, moved)
        invoice.status, invoice.flags, invoice.paid, invoice.confirmed = state
        invoice.updated_at = now
        session.add(invoice)
        session.flush()
        emit_fiat(session, config, settings, invoice, events, now, result.remaining)
    return result


def emit_fiat(
    session: Session,
    config: AppConfig,
    settings: CheckoutSettings,
    invoice: FiatInvoice,
    event_types: list[str],
    now: datetime,
    remaining: int,
) -> None:
    """One outbox row per event, each with the next ``status_version``; ``data`` is the fiat
    invoice JSON of ``GET /v1/invoices/chk_...`` (price, remaining and paid in fiat)."""
    if not event_types:
        return
    data = fiat_view(session, config, invoice, settings, remaining)
    insert_events(session, event_rows(invoice, event_types, now, data, fiat=True))
    session.add(invoice)


def open_attempt(
    session: Session,
    config: AppConfig,
    rates: Rates,
    settings: CheckoutSettings,
    invoice: FiatInvoice,
    currency: Any,
    now: datetime,
) -> PaymentAttempt:
    """Convert the fiat remainder at the current rate, lock it, and issue a deposit target for it."""
    network_name, asset_symbol = _currency(config, currency, "currency")
    if currency not in invoice.currencies:
        raise InputError(
            f"currency: {currency} is not offered for this invoice; choose one of {', '.join(invoice.currencies)}",
            field="currency",
        )
    result = reevaluate(session, config, rates, settings, invoice, now)
    status = result.decision.status
    if status in TERMINAL or status in (InvoiceStatus.EXPIRED, InvoiceStatus.PARTIALLY_EXPIRED):
        raise ConflictError(f"invoice is {status.value}; no new payment attempt can be opened", field="status")
    if result.remaining <= 0:
        raise ConflictError("payments already cover the invoice; they are awaiting confirmations", field="status")
    if len(attempts_of(session, invoice)) >= MAX_ATTEMPTS:
        raise ConflictError(f"this invoice already has {MAX_ATTEMPTS} payment attempts", field="currency")
    window = invoice.expires_at - now
    if window < MIN_ATTEMPT_WINDOW:
        raise ConflictError("invoice expires in less than a minute; no new payment attempt", field="status")
    require_fresh(session, config, network_name, now)  # a stalled scanner would not see the payment
    rate = rates.current(asset_symbol, invoice.currency, now)  # RateUnavailable -> 503
    network = config.networks[network_name]
    asset = network.assets[asset_symbol]
    remaining = Decimal(from_minor(result.remaining, invoice.exponent))
    units = fiat_to_units(remaining, rate.price, asset.decimals)
    store = session.get(Store, invoice.store_id)
    assert store is not None
    crypto = create_invoice(
        session,
        config,
        store,
        InvoiceRequest(
            network=network_name,
            asset=asset_symbol,
            amount=format_amount(max(units, asset.min_units), asset.decimals),
            expires_in=int(window.total_seconds()),
            order_id=invoice.order_id,
            description=f"payment attempt for {invoice.id}",
            metadata={ATTEMPT_METADATA_KEY: invoice.id},
        ),
        now,
    )
    attempt = PaymentAttempt(
        id="pay_" + secrets.token_hex(10),
        number=len(attempts_of(session, invoice)) + 1,
        fiat_invoice_id=invoice.id,
        invoice_id=crypto.id,
        currency=currency,
        rate=str(rate.price),
        rate_sources=",".join(rate.sources)[:200],
        fiat_amount=result.remaining,
        locked_until=min(now + settings.lock_window, invoice.expires_at),
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(attempt)
            session.flush()
    except IntegrityError as exc:
        raise ConflictError("another payment attempt was opened at the same moment; retry", field="currency") from exc
    return attempt


def fiat_view(
    session: Session,
    config: AppConfig,
    invoice: FiatInvoice,
    settings: CheckoutSettings,
    remaining: int,
) -> dict[str, Any]:
    """The fiat invoice JSON: price, remaining, the page URL and every attempt with its crypto invoice."""
    exp = invoice.exponent
    payments = []
    for attempt, crypto in attempts_of(session, invoice):
        crypto_json = load_view(session, crypto, config.networks[crypto.network])
        payments.append(
            {
                "id": attempt.id,
                "currency": attempt.currency,
                "invoice_id": crypto.id,
                "crypto_amount": crypto_json["amount"],
                "rate": attempt.rate,
                "rate_sources": attempt.rate_sources.split(","),
                "fiat_amount": from_minor(attempt.fiat_amount, exp),
                "address": crypto.address,
                "memo": crypto.memo,
                "payment_uri": crypto_json["payment_uri"],
                "status": crypto.status,
                "amount_paid": crypto_json["amount_paid"],
                "confirmations_required": crypto.confirmations_required,
                "rate_locked_until": iso(attempt.locked_until),
                "expires_at": iso(crypto.expires_at),
                "transactions": crypto_json["payments"],
            }
        )
    return {
        "id": invoice.id,
        "store_id": invoice.store_id,
        "status": invoice.status,
        "status_version": invoice.status_version,
        "flags": sorted(invoice.flags),
        "price": {"amount": from_minor(invoice.total, exp), "currency": invoice.currency},
        "remaining": {"amount": from_minor(remaining, exp), "currency": invoice.currency},
        "paid": {"amount": from_minor(invoice.paid, exp), "currency": invoice.currency},
        "currencies": list(invoice.currencies),
        "items": [
            {
                "description": i["description"],
                "quantity": i["quantity"],
                "unit_price": from_minor(i["unit_price"], exp),
            }
            for i in invoice.items
        ],
        "discount": from_minor(invoice.discount, exp),
        "tax": from_minor(invoice.tax, exp),
        "invoice_url": f"{settings.public_url.rstrip('/')}/pay/{invoice.slug}",
        "redirect_url": invoice.redirect_url,
        "note": invoice.note,
        "order_id": invoice.order_id,
        "expires_at": iso(invoice.expires_at),
        "created_at": iso(invoice.created_at),
        "updated_at": iso(invoice.updated_at),
        "viewed_at": iso(invoice.viewed_at),
        "payments": payments,
    }


def list_with_fiat(
    session: Session,
    config: AppConfig,
    settings: CheckoutSettings,
    store_id: str,
    *,
    kind: str,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """``GET /v1/invoices?kind=fiat|all``: fiat invoices (and crypto ones for ``all``), newest first,
    as last evaluated (the worker re-evaluates them on every change); ``cursor`` is either kind's id."""
    wanted = status_filter(status)
    anchor = None
    if cursor is not None:
        model: Any = FiatInvoice if cursor.startswith("chk_") else Invoice
        row = session.get(model, cursor) if "\x00" not in cursor else None
        if row is None or row.store_id != store_id:
            raise InputError("cursor does not name an invoice of this store", field="cursor")
        anchor = (row.created_at, row.id)
    rows: list[Any] = newest_first(session, FiatInvoice, store_id, wanted, anchor, limit + 1)
    if kind == "all":
        rows += newest_first(session, Invoice, store_id, wanted, anchor, limit + 1)
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    data = [
        fiat_view(session, config, row, settings, max(0, row.total - row.paid))
        if isinstance(row, FiatInvoice)
        else load_view(session, row, config.networks[row.network])
        for row in rows[:limit]
    ]
    return data, next_cursor
