"""Merchant invoice endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from paywatch.api.deps import Context, CurrentStore, DbSession
from paywatch.api.schemas import ERROR_RESPONSES, InvoiceCreate, InvoiceList, InvoiceOut
from paywatch.checkout.service import list_with_fiat
from paywatch.health import creation_height, require_fresh
from paywatch.invoices import (
    InvoiceRequest,
    cancel_invoice,
    get_invoice,
    issue_invoice,
    list_invoices,
    mark_paid,
)
from paywatch.outbox import load_view
from paywatch.store.models import Invoice, NetworkState

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], responses=ERROR_RESPONSES)
InvoiceId = Annotated[str, Path(max_length=64, description="Invoice id (inv_...)")]


def _view(session: DbSession, context: Context, invoice: Invoice) -> dict[str, Any]:
    return load_view(session, invoice, context.config.networks[invoice.network])


@router.post("", status_code=201, response_model=InvoiceOut, summary="Create an invoice")
def create(body: InvoiceCreate, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    now = context.clock()
    context.rate_limits().invoices.take(store.id, now)
    # Read the network's scan state once: holding it keeps it in the session's identity map (which
    # holds rows weakly), so the lag guard, the creation height and the view below reuse it.
    state = session.get(NetworkState, body.network) if "\x00" not in body.network else None
    require_fresh(session, context.config, body.network, now)
    request = InvoiceRequest(**{**body.model_dump(exclude={"metadata"}), "metadata": body.metadata or {}})
    known = body.network in context.config.networks  # an unknown one is named by create_invoice
    height = creation_height(session, body.network, context.read_tip) if known else None
    _invoice, view = issue_invoice(session, context.config, store, request, now, height=height)
    del state
    return view


@router.get("", response_model=InvoiceList, summary="List invoices, newest first")
def list_(
    request: Request,
    store: CurrentStore,
    session: DbSession,
    context: Context,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[
        Literal["crypto", "fiat", "all"],
        Query(description="crypto (default: invoices priced in crypto, as before), fiat (chk_...), or all"),
    ] = "crypto",
) -> dict[str, Any]:
    if kind != "crypto":
        settings = request.app.state.checkout.settings
        data, after = list_with_fiat(
            session, context.config, settings, store.id, kind=kind, status=status, limit=limit, cursor=cursor
        )
        return {"data": data, "next_cursor": after}
    rows, next_cursor = list_invoices(session, store.id, status=status, limit=limit, cursor=cursor)
    return {"data": [_view(session, context, row) for row in rows], "next_cursor": next_cursor}


@router.get("/{invoice_id}", response_model=InvoiceOut, summary="Get an invoice")
def get(invoice_id: InvoiceId, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    return _view(session, context, get_invoice(session, store.id, invoice_id))


@router.post("/{invoice_id}/cancel", response_model=InvoiceOut, summary="Cancel an unpaid invoice")
def cancel(invoice_id: InvoiceId, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    invoice = get_invoice(session, store.id, invoice_id)
    cancel_invoice(session, context.ledger, invoice, context.clock(), actor=f"api:{store.id}")
    return _view(session, context, invoice)


@router.post("/{invoice_id}/mark-paid", response_model=InvoiceOut, summary="Mark an invoice paid by hand")
def mark_paid_(invoice_id: InvoiceId, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    invoice = get_invoice(session, store.id, invoice_id)
    mark_paid(session, context.ledger, invoice, context.clock(), actor=f"api:{store.id}")
    return _view(session, context, invoice)
