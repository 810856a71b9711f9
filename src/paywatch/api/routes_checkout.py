"""Fiat-priced invoices on the merchant API: create (same POST as crypto invoices), get, open attempts.

Mounted before the invoice routes: ``POST /v1/invoices`` with a ``price`` goes to checkout, any other
body to the unchanged crypto-invoice handler. Fiat invoice ids start with ``chk_``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from paywatch.api import routes_invoices
from paywatch.api.context import AppContext
from paywatch.api.deps import Context, CurrentStore, DbSession, get_context, request_key
from paywatch.api.schemas import ERROR_RESPONSES, InvoiceCreate
from paywatch.checkout.context import Checkout
from paywatch.checkout.models import FiatInvoice
from paywatch.checkout.service import (
    FiatInvoiceRequest,
    create_fiat_invoice,
    fiat_view,
    get_fiat_invoice,
    open_attempt,
    reevaluate,
)
from paywatch.errors import InputError
from paywatch.store.db import session_scope
from paywatch.store.models import Store
from paywatch.stores import authenticate

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], responses=ERROR_RESPONSES)
FiatId = Annotated[str, Path(max_length=60)]
FIAT_FIELDS = {"price", "currencies", "items", "discount", "tax", "redirect_url", "note", "order_id", "expires_in"}


def checkout_of(request: Request) -> Checkout:
    checkout: Checkout = request.app.state.checkout
    return checkout


async def json_object(request: Request) -> dict[str, Any]:
    return parse_object(await request.body())


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body, a JSON object (422 when it is not JSON, 4xx when it is not an object)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]) from None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object", field=None)
    return body


def view(request: Request, session: DbSession, context: Context, invoice: FiatInvoice) -> dict[str, Any]:
    checkout = checkout_of(request)
    rates = checkout.reader(session)
    result = reevaluate(session, context.config, rates, checkout.settings, invoice, context.clock())
    return fiat_view(session, context.config, invoice, checkout.settings, result.remaining)


@router.post("", status_code=201, include_in_schema=False)
async def create(request: Request) -> Response:
    """Every ``POST /v1/invoices``, crypto or fiat (the schema shows routes_invoices.create).

    The busiest route, so it takes one worker-thread hop for all its database work (authentication,
    then the body, then the invoice, in one transaction committed before the answer), under the
    admission gate (see api.db_gate), instead of a hop per dependency, and it solves no
    dependencies (not in the schema: it reads the key through the same header schemes itself).
    The database work (which may wait on row locks) never runs on the event loop. Checks keep
    their order: the key, the JSON, the fields.
    """
    key = await request_key(request)
    context = await get_context(request)
    raw = await request.body()  # read in full by the BodyLimit middleware already
    async with context.gate.admitted():
        answer = await run_in_threadpool(_create_in_transaction, request, raw, key, context)
    return JSONResponse(answer, status_code=201)


def _create_in_transaction(request: Request, raw: bytes, key: str, context: AppContext) -> dict[str, Any]:
    with session_scope(context.engine) as session:
        store = authenticate(session, key)
        return _create(request, parse_object(raw), store, session, context)


def _create(
    request: Request, body: dict[str, Any], store: Store, session: Session, context: AppContext
) -> dict[str, Any]:
    """The new invoice's JSON. A crypto invoice's view holds JSON values only (it is its
    ``invoice.created`` event's body too); a fiat one is encoded as FastAPI encodes a returned dict."""
    if "price" not in body:
        try:
            crypto = InvoiceCreate.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        return routes_invoices.create(crypto, store, session, context)
    unknown = sorted(set(body) - FIAT_FIELDS)
    if unknown:
        raise InputError(f"{unknown[0]}: unknown field", field=unknown[0])
    now = context.clock()
    context.rate_limits().invoices.take(store.id, now)
    checkout = checkout_of(request)
    request_ = FiatInvoiceRequest(**{name: body.get(name) for name in FIAT_FIELDS})
    invoice = create_fiat_invoice(session, context.config, store, request_, now, checkout.rates, checkout.settings)
    fiat: dict[str, Any] = jsonable_encoder(view(request, session, context, invoice))
    return fiat


@router.get("/chk_{rest}", summary="Get a fiat-priced invoice")
def get(rest: FiatId, request: Request, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    return view(request, session, context, get_fiat_invoice(session, store.id, "chk_" + rest))


@router.post("/chk_{rest}/payments", status_code=201, summary="Open a payment attempt at a locked rate")
async def open_payment(
    rest: FiatId, request: Request, store: CurrentStore, session: DbSession, context: Context
) -> dict[str, Any]:
    body = await json_object(request)
    if set(body) != {"currency"}:
        raise InputError('the body must be {"currency": "tron:USDT"}', field="currency")
    return await run_in_threadpool(_open_payment, request, store, session, context, rest, body["currency"])


def _open_payment(
    request: Request, store: CurrentStore, session: DbSession, context: Context, rest: str, currency: Any
) -> dict[str, Any]:
    invoice = get_fiat_invoice(session, store.id, "chk_" + rest)
    return attempt(request, session, context, invoice, currency)


def attempt(
    request: Request, session: DbSession, context: Context, invoice: FiatInvoice, currency: Any
) -> dict[str, Any]:
    """Open an attempt (shared with the pay page) and answer the whole fiat invoice."""
    checkout = checkout_of(request)
    now = context.clock()
    context.rate_limits().invoices.take(invoice.store_id, now)  # an attempt issues a deposit target
    if isinstance(currency, str) and currency.count(":") == 1 and currency in invoice.currencies:
        # Nothing is written yet: end the read transaction so that no database lock (SQLite takes
        # the write lock at BEGIN) is held while the price APIs answer; the rows reload on next use.
        session.rollback()
        checkout.ensure_rates(context.engine, [currency.split(":")[1]], now)
    rates = checkout.reader(session)
    open_attempt(session, context.config, rates, checkout.settings, invoice, currency, now)
    return view(request, session, context, invoice)
