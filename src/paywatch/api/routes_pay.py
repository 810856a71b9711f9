"""The hosted pay page: ``GET /pay/{slug}``, its status JSON and the payer's currency choice.

Server-rendered (Jinja2) with one small inline script under a per-response CSP nonce; nothing is
loaded from a third party. An unknown slug gets the same plain 404 page whatever the reason.
"""

from __future__ import annotations

import secrets
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from paywatch.api.deps import Context, DbSession
from paywatch.api.routes_checkout import attempt, json_object, view
from paywatch.checkout.models import FiatInvoice, StoreLogo
from paywatch.checkout.page import mark_viewed, public_view, script_json
from paywatch.checkout.service import by_slug
from paywatch.checkout.texts import texts
from paywatch.domain.checkout import from_minor
from paywatch.errors import NotFoundError
from paywatch.store.models import Store

router = APIRouter(prefix="/pay", include_in_schema=False)
Slug = Annotated[str, Path(max_length=64)]


@cache
def _env() -> Environment:
    return Environment(loader=PackageLoader("paywatch.checkout", "templates"), autoescape=select_autoescape(["html"]))


@cache
def _script() -> str:
    return files("paywatch.checkout").joinpath("templates/pay.js").read_text(encoding="utf-8")


def security_headers(nonce: str) -> dict[str, str]:
    """Strict CSP with a nonce (no inline code without it), no framing, no referrer, no caching."""
    csp = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _not_found() -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _env().get_template("not_found.html").render(t=texts(), nonce=nonce)
    return HTMLResponse(html, status_code=404, headers=security_headers(nonce))


def _lookup(session: DbSession, slug: str) -> FiatInvoice:
    invoice = by_slug(session, slug)
    if invoice is None:
        raise NotFoundError("no such payment page", field="slug")
    return invoice


@router.get("/{slug}", response_class=HTMLResponse)
def page(slug: Slug, request: Request, session: DbSession, context: Context) -> HTMLResponse:
    invoice = by_slug(session, slug)
    if invoice is None:
        return _not_found()
    mark_viewed(session, invoice, context.clock())
    full = view(request, session, context, invoice)
    store = session.get(Store, invoice.store_id)
    logo = session.exec(
        select(StoreLogo.sha256, StoreLogo.width, StoreLogo.height).where(StoreLogo.store_id == invoice.store_id)
    ).first()
    nonce = secrets.token_urlsafe(16)
    t = texts()
    html = (
        _env()
        .get_template("pay.html")
        .render(
            t=t,
            nonce=nonce,
            store_name=store.name if store else "",
            slug=slug,
            logo={"version": logo[0][:16], "width": logo[1], "height": logo[2]} if logo else None,
            price=full["price"]["amount"],
            currency=full["price"]["currency"],
            remaining=full["remaining"]["amount"],
            items=full["items"],
            discount=full["discount"],
            tax=full["tax"],
            zero=from_minor(0, invoice.exponent),
            note=full["note"],
            status=full["status"],
            expires_at=full["expires_at"],
            redirect_url=full["redirect_url"],
            currencies=[{"id": c, "label": f"{c.split(':')[1]} ({c.split(':')[0]})"} for c in full["currencies"]],
            texts_json=script_json(t),
            script=_script(),
        )
    )
    return HTMLResponse(html, headers=security_headers(nonce))


@router.get("/{slug}/logo")
def logo(slug: Slug, session: DbSession) -> Response:
    """The store's logo, from this origin (the page's CSP allows images from 'self' only)."""
    invoice = _lookup(session, slug)
    row = session.get(StoreLogo, invoice.store_id)
    if row is None:
        raise NotFoundError("no logo", field="slug")
    headers = {
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "private, max-age=3600",  # the page asks for ?v=<hash>: a new logo is a new URL
    }
    return Response(row.data, media_type=row.content_type, headers=headers)


@router.get("/{slug}/status")
def status(slug: Slug, request: Request, session: DbSession, context: Context) -> JSONResponse:
    invoice = _lookup(session, slug)
    return JSONResponse(public_view(view(request, session, context, invoice)), headers={"Cache-Control": "no-store"})


@router.post("/{slug}/attempts")
async def open_(slug: Slug, request: Request, session: DbSession, context: Context) -> JSONResponse:
    body = await json_object(request)
    # The database and price API work runs in a worker thread, never on the event loop.
    return await run_in_threadpool(_open, slug, request, session, context, body.get("currency"))


def _open(slug: str, request: Request, session: DbSession, context: Context, currency: Any) -> JSONResponse:
    invoice = _lookup(session, slug)
    full: dict[str, Any] = attempt(request, session, context, invoice, currency)
    return JSONResponse(public_view(full), status_code=201, headers={"Cache-Control": "no-store"})
