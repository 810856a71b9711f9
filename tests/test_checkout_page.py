"""The hosted pay page over HTTP: rendering, security headers, 404 without leaks, status JSON, attempts."""

from __future__ import annotations

import re

from sqlmodel import select

from paywatch.checkout.models import FiatInvoice
from paywatch.config import AppConfig
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from tests.support.api_helpers import Api
from tests.test_checkout_api import api, attempt, create, pay, rates_srv  # noqa: F401  (fixtures)


def slug_of(invoice: dict[str, object]) -> str:
    return str(invoice["invoice_url"]).rsplit("/", 1)[1]


def test_page_renders_with_strict_headers_and_tracks_first_view(api: Api) -> None:  # noqa: F811
    inv = create(
        api,
        items=[{"description": "Mug <b>", "quantity": 1, "unit_price": "29.99"}],
        redirect_url="https://shop.example/thanks",
    ).json()
    page = api.client.get(f"/pay/{slug_of(inv)}")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and page.headers["x-frame-options"] == "DENY"
    html = page.text
    assert "Mug &lt;b&gt;" in html and "29.99" in html and 'data-currency="tron:USDT"' in html
    # every script is either data or carries the nonce; nothing from another origin
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'type="application/json"' in tag or f'nonce="{nonce.group(1)}"' in tag
    assert "http://" not in html.replace("http://127.0.0.1", "") and "src=" not in html
    with session_scope(api.engine) as session:
        row = session.get(FiatInvoice, inv["id"])
        assert row is not None and row.viewed_at == api.clock()
        events = list(session.exec(select(CallbackEvent).where(CallbackEvent.type == "invoice.viewed")))
    assert len(events) == 1 and inv["id"] in events[0].body
    api.client.get(f"/pay/{slug_of(inv)}")
    with session_scope(api.engine) as session:
        assert len(list(session.exec(select(CallbackEvent).where(CallbackEvent.type == "invoice.viewed")))) == 1
    assert api.client.get(f"/v1/invoices/{inv['id']}", headers=api.headers()).json()["viewed_at"] is not None


def test_unknown_slug_is_a_plain_404_page(api: Api) -> None:  # noqa: F811
    inv = create(api).json()
    for slug in ("nope", slug_of(inv)[:-1] + "x", inv["id"], "%00"):
        response = api.client.get(f"/pay/{slug}")
        assert response.status_code == 404
        assert "text/html" in response.headers["content-type"] and "content-security-policy" in response.headers
        assert "There is no payment page at this address." in response.text
        assert inv["id"] not in response.text and "29.99" not in response.text
    assert api.client.get("/pay/nope/status").status_code == 404


def test_status_json_and_attempt_from_the_page(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    inv = create(api).json()
    slug = slug_of(inv)
    opened = api.client.post(f"/pay/{slug}/attempts", json={"currency": "tron:USDT"})
    assert opened.status_code == 201, opened.text
    body = opened.json()
    [payment] = body["payments"]
    assert payment["crypto_amount"] == "29.99" and payment["qr_svg"].startswith("<svg")
    assert "store_id" not in body and "order_id" not in body and body["redirect_url"] is None
    pay(api, app_config, {**payment, "invoice_id": _crypto_id(api, inv["id"])}, 10_000_000)
    status = api.client.get(f"/pay/{slug}/status").json()
    assert status["status"] == "PARTIAL" and status["remaining"]["amount"] == "19.99"
    bad = api.client.post(f"/pay/{slug}/attempts", json={"currency": "ethereum:DOGE"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "currency"


def test_expired_page_refuses_a_new_attempt(api: Api) -> None:  # noqa: F811
    inv = create(api, expires_in=120).json()
    api.clock.advance(minutes=3)
    refused = api.client.post(f"/pay/{slug_of(inv)}/attempts", json={"currency": "tron:USDT"})
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "status"
    assert api.client.get(f"/pay/{slug_of(inv)}/status").json()["status"] == "EXPIRED"


def _crypto_id(client_api: Api, fiat_id: str) -> str:
    got = client_api.client.get(f"/v1/invoices/{fiat_id}", headers=client_api.headers()).json()
    return str(got["payments"][-1]["invoice_id"])
