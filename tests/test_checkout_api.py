"""Fiat-priced invoices through the real API: validation, attempts at a locked rate, the fiat status rules.

Rates come from tests/support/rate_server.py (recorded shapes, local); USDT is fixed at 1 USD.
Payments are recorded through the real Ledger, as a scanner would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from paywatch.api.app import create_app
from paywatch.checkout.context import Checkout
from paywatch.checkout.rates import RateBook, RatesConfig
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.checkout.service import CheckoutSettings
from paywatch.config import AppConfig
from paywatch.domain.matching import Match
from paywatch.domain.transfer import NATIVE, Transfer, address_key
from paywatch.ledger import Ledger
from paywatch.scanner import WatchIndexCache
from paywatch.store.db import session_scope
from paywatch.store.models import NetworkState, Store
from tests.conftest import USDT_ETH, USDT_TRON
from tests.support.api_helpers import Api, make_api
from tests.support.rate_server import RateServer, rate_server, recorded

CG, KR, CB = "/api/v3/simple/price", "/0/public/Ticker", "/v2/exchange-rates"
_tx = itertools.count(1)


@pytest.fixture
def rates_srv() -> Iterator[RateServer]:
    with rate_server() as srv:
        srv.set(CG, 200, recorded("coingecko_simple_price.json"))
        srv.set(KR, 200, recorded("kraken_ticker_ETHUSD.json"))
        srv.set(CB, 200, recorded("coinbase_exchange_rates_ETH.json"))
        yield srv


@pytest.fixture
def api(engine: Engine, app_config: AppConfig, rates_srv: RateServer) -> Api:
    api = make_api(engine, app_config)
    config = RatesConfig.model_validate(
        {
            "base_urls": {"coingecko": rates_srv.url, "kraken": rates_srv.url, "coinbase": rates_srv.url},
            "fixed": {"USDT": {"USD": "1"}},
            "max_age_seconds": 120,
            "refresh_seconds": 60,
        }
    )
    checkout = Checkout(RateBook(config, httpx.Client(timeout=5), EcbConverter()), CheckoutSettings())
    api.app = create_app(app_config, engine=engine, clock=api.clock, checkout=checkout)
    api.client = TestClient(api.app, raise_server_exceptions=False)
    return api


def create(api: Api, **body: Any) -> httpx.Response:
    payload = {
        "price": {"amount": "29.99", "currency": "USD"},
        "currencies": ["tron:USDT", "ethereum:USDT", "ethereum:ETH"],
        **body,
    }
    return api.client.post("/v1/invoices", json=payload, headers=api.headers())


def attempt(api: Api, invoice_id: str, currency: str) -> httpx.Response:
    return api.client.post(f"/v1/invoices/{invoice_id}/payments", json={"currency": currency}, headers=api.headers())


def get(api: Api, invoice_id: str) -> Any:
    return api.client.get(f"/v1/invoices/{invoice_id}", headers=api.headers()).json()


def pay(
    api: Api,
    app_config: AppConfig,
    payment: dict[str, Any],
    amount: int,
    *,
    block_time: datetime | None = None,
    confirmed: bool = True,
) -> None:
    """Record a transfer to the attempt's address through the Ledger; ``confirmed`` sets the tip."""
    network = payment["currency"].split(":")[0]
    asset = payment["currency"].split(":")[1]
    contract = {"ethereum:USDT": USDT_ETH, "tron:USDT": USDT_TRON}.get(payment["currency"])
    transfer = Transfer(
        network=network,
        tx_hash="0x" + f"{next(_tx):064x}",
        log_index=0 if contract else -1,
        block_number=100,
        block_hash="0x" + "cd" * 32,
        block_time=block_time or api.clock(),
        from_address="0x" + "11" * 20,
        to_address=payment["address"],
        asset_key=address_key(contract) if contract else NATIVE,
        amount=amount,
        memo=payment["memo"],
    )
    assert asset
    with session_scope(api.engine) as session:
        state = session.get(NetworkState, network) or NetworkState(network=network)
        state.tip_height = 200 if confirmed else 100
        state.final_height = 200 if confirmed and network == "tron" else None
        state.cursor_height = state.tip_height
        state.last_scan_at = api.clock()
        session.add(state)
        session.flush()
        Ledger(app_config.networks).record_matches(session, [Match(transfer, payment["invoice_id"])], api.clock())


def test_crypto_form_still_works(api: Api) -> None:
    response = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "25.5"}, headers=api.headers()
    )
    assert response.status_code == 201 and response.json()["amount"] == "25.5"


def test_create_fiat_invoice_with_items(api: Api) -> None:
    response = create(
        api,
        price={"amount": "30.00", "currency": "USD"},
        items=[
            {"description": "mug", "quantity": 2, "unit_price": "12.50"},
            {"description": "tea", "quantity": 1, "unit_price": "4.00"},
        ],
        discount="1.50",
        tax="2.50",
        redirect_url="https://shop.example/thanks",
        note="gift",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("chk_") and body["status"] == "PENDING"
    assert body["price"] == {"amount": "30.00", "currency": "USD"}
    assert body["remaining"] == {"amount": "30.00", "currency": "USD"}
    assert body["invoice_url"].startswith("http://127.0.0.1:8000/pay/") and len(body["invoice_url"]) > 50
    assert body["items"][0] == {"description": "mug", "quantity": 2, "unit_price": "12.50"}
    assert body["payments"] == [] and get(api, body["id"]) == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": {"amount": "10", "currency": "XYZ"}}, "price.currency"),
        ({"price": {"amount": "10", "currency": 5}}, "price.currency"),
        ({"price": {"amount": "10.001", "currency": "USD"}}, "price.amount"),
        ({"price": {"amount": "0", "currency": "USD"}}, "price.amount"),
        ({"price": {"amount": 10, "currency": "USD"}}, "price.amount"),
        ({"price": "10 USD"}, "price"),
        ({"currencies": ["tron:DOGE"]}, "currencies[0]"),
        ({"currencies": ["bitcoin:BTC"]}, "currencies[0]"),
        ({"currencies": []}, "currencies"),
        ({"currencies": "tron:USDT"}, "currencies"),
        ({"items": [{"description": "x", "quantity": 1, "unit_price": "10"}]}, "price.amount"),
        ({"items": [{"description": "x", "quantity": 0, "unit_price": "29.99"}]}, "items[0].quantity"),
        ({"items": [{"description": "x", "quantity": 1, "unit_price": "-1"}]}, "items[0].unit_price"),
        ({"items": [{"description": "", "quantity": 1, "unit_price": "1"}]}, "items[0].description"),
        ({"discount": "1.00"}, "items"),
        ({"discount": "-1"}, "discount"),
        ({"redirect_url": "http://shop.example/thanks"}, "redirect_url"),
        ({"redirect_url": "javascript:alert(1)"}, "redirect_url"),
        ({"note": 5}, "note"),
        ({"surprise": 1}, "surprise"),
        ({"expires_in": "soon"}, "expires_in"),
    ],
)
def test_bad_fiat_input_names_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    response = create(api, **body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_attempt_converts_remaining_at_locked_rate(api: Api) -> None:
    inv = create(api).json()
    response = attempt(api, inv["id"], "ethereum:ETH")
    assert response.status_code == 201, response.text
    [payment] = response.json()["payments"]
    assert payment["rate"] == "3012.45" and payment["fiat_amount"] == "29.99"
    # 29.99 / 3012.45 ETH, rounded up to the wei
    assert payment["crypto_amount"] == "0.009955351956049064"
    assert payment["rate_locked_until"] == "2026-01-01T12:15:00Z"
    assert payment["address"].startswith("0x") and payment["payment_uri"].startswith("ethereum:")
    usdt = attempt(api, inv["id"], "tron:USDT").json()["payments"][1]
    assert usdt["rate"] == "1" and usdt["crypto_amount"] == "29.99" and usdt["rate_sources"] == ["fixed"]


def test_api_invoices_and_attempts_are_watched_on_the_next_scan_step(api: Api, app_config: AppConfig) -> None:
    """A scanner's watch index already built sees each new target on its next step, no restart."""
    cache = WatchIndexCache(app_config.networks["ethereum"], api.engine)
    cache.get()
    crypto = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "ETH", "amount": "1"}, headers=api.headers()
    ).json()
    payment = attempt(api, create(api).json()["id"], "ethereum:ETH").json()["payments"][0]
    targets = [(crypto["address"], crypto["id"]), (payment["address"], payment["invoice_id"])]
    for address, invoice_id in targets:
        sent = Transfer("ethereum", "0x" + "ab" * 32, -1, 1, "0xb", api.clock(), "0xf", address, NATIVE, 10**18)
        found = cache.get().match(sent)
        assert isinstance(found, Match) and found.invoice_id == invoice_id
    assert cache.builds == 1


def test_lock_never_past_invoice_expiry(api: Api) -> None:
    inv = create(api, expires_in=600).json()
    payment = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    assert payment["rate_locked_until"] == "2026-01-01T12:10:00Z" == inv["expires_at"]


def test_attempt_bad_currency(api: Api) -> None:
    inv = create(api, currencies=["tron:USDT"]).json()
    assert attempt(api, inv["id"], "ethereum:ETH").json()["error"]["field"] == "currency"
    assert attempt(api, inv["id"], "moon:COIN").json()["error"]["field"] == "currency"
    assert attempt(api, "chk_nope", "tron:USDT").status_code == 404


def test_partial_then_remainder_attempt_then_completed(api: Api, app_config: AppConfig) -> None:
    inv = create(api).json()
    first = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    pay(api, app_config, first, 10_000_000)  # 10 USDT = 10.00 USD
    partial = get(api, inv["id"])
    assert partial["status"] == "PARTIAL" and partial["remaining"]["amount"] == "19.99"
    second = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][1]
    assert second["fiat_amount"] == "19.99"
    assert Decimal(second["crypto_amount"]) * Decimal("3012.45") >= Decimal("19.99")
    pay(api, app_config, second, int(Decimal(second["crypto_amount"]) * 10**18), confirmed=False)
    waiting = get(api, inv["id"])
    assert waiting["status"] == "WAITING_FOR_CONFIRMATIONS" and waiting["remaining"]["amount"] == "0.00"
    conflict = attempt(api, inv["id"], "tron:USDT")
    assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "status"
    pay(api, app_config, {**second, "amount": 0}, 1, confirmed=True)  # a later block confirms everything
    done = get(api, inv["id"])
    assert done["status"] == "COMPLETED"
    assert attempt(api, inv["id"], "tron:USDT").status_code == 409


def test_converted_back_at_the_locked_rate(api: Api, app_config: AppConfig, rates_srv: RateServer) -> None:
    inv = create(api).json()
    first = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][0]
    # the market moves; the attempt's lock still values its payment at 3012.45
    rates_srv.set(CG, 200, b'{"ethereum": {"usd": 1000}}')
    rates_srv.set(KR, 200, b'{"error": [], "result": {"X": {"c": ["1000", "1"]}}}')
    rates_srv.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "1000"}}}')
    api.clock.advance(minutes=2)
    pay(api, app_config, first, int(Decimal(first["crypto_amount"]) * 10**18))
    assert get(api, inv["id"])["status"] == "COMPLETED"


def test_after_rate_lock_valued_at_block_time_rate_and_flagged(
    api: Api, app_config: AppConfig, rates_srv: RateServer
) -> None:
    inv = create(api).json()
    first = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][0]
    api.clock.advance(minutes=20)  # lock (15 min) ran out; the invoice window (24 h) did not
    rates_srv.set(CG, 200, b'{"ethereum": {"usd": 1506.225}}')
    rates_srv.set(KR, 200, b'{"error": [], "result": {"X": {"c": ["1506.225", "1"]}}}')
    rates_srv.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "1506.225"}}}')
    api.app.state.checkout.ensure_rates(api.engine, ["ETH"], api.clock())  # the rate at that time is known
    pay(api, app_config, first, int(Decimal(first["crypto_amount"]) * 10**18))
    got = get(api, inv["id"])
    # half the price now: the full crypto amount is worth about half the fiat
    assert got["status"] == "PARTIAL" and "after_rate_lock" in got["flags"]
    assert Decimal(got["remaining"]["amount"]) == Decimal("15.00")


def test_after_rate_lock_without_rate_uses_locked_rate_flagged(api: Api, app_config: AppConfig) -> None:
    inv = create(api).json()
    first = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][0]
    api.clock.advance(minutes=20)
    pay(api, app_config, first, int(Decimal(first["crypto_amount"]) * 10**18))
    got = get(api, inv["id"])
    assert got["status"] == "COMPLETED" and "after_rate_lock" in got["flags"]


def test_rates_down_refuse_new_attempts_with_503_but_locks_hold(
    api: Api, app_config: AppConfig, rates_srv: RateServer
) -> None:
    inv = create(api).json()
    first = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][0]
    for path in (CG, KR, CB):
        rates_srv.set(path, 500, b"")
    api.clock.advance(minutes=3)  # the cached rate (max age 2 min) is stale, the refresh fails
    refused = attempt(api, inv["id"], "ethereum:ETH")
    assert refused.status_code == 503 and "ETH/USD" in refused.json()["error"]["message"]
    assert attempt(api, inv["id"], "tron:USDT").status_code == 201  # a fixed rate needs no source
    pay(api, app_config, first, int(Decimal(first["crypto_amount"]) * 10**18))
    assert get(api, inv["id"])["status"] == "COMPLETED"


def test_expired_invoice_refuses_attempts(api: Api, app_config: AppConfig) -> None:
    inv = create(api, expires_in=120).json()
    first = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    pay(api, app_config, first, 5_000_000)
    api.clock.advance(minutes=3)
    got = get(api, inv["id"])
    assert got["status"] == "PARTIALLY_EXPIRED" and got["remaining"]["amount"] == "24.99"
    refused = attempt(api, inv["id"], "tron:USDT")
    assert refused.status_code == 409 and "PARTIALLY_EXPIRED" in refused.json()["error"]["message"]


def test_tolerance_and_late_policy_apply_to_the_fiat_total(api: Api, app_config: AppConfig) -> None:
    with session_scope(api.engine) as session:
        store = session.get(Store, api.store_id)
        assert store is not None
        store.underpaid_tolerance = "0.01"
        session.add(store)
    inv = create(api, expires_in=600).json()
    first = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    pay(api, app_config, first, 29_800_000)  # 29.80 of 29.99: within 1 %
    assert get(api, inv["id"])["status"] == "COMPLETED"
    late = create(api, expires_in=600).json()
    late_attempt = attempt(api, late["id"], "tron:USDT").json()["payments"][0]
    api.clock.advance(minutes=11)
    pay(api, app_config, late_attempt, 29_990_000, block_time=api.clock())
    got = get(api, late["id"])
    assert got["status"] == "EXPIRED" and "paid_late" in got["flags"]


def test_other_store_cannot_see_it(api: Api) -> None:
    from tests.support.api_helpers import add_store

    inv = create(api).json()
    other = add_store(api, "other")
    assert api.client.get(f"/v1/invoices/{inv['id']}", headers=api.headers(other)).status_code == 404
    assert attempt(api, inv["id"], "tron:USDT").status_code == 201
    response = api.client.post(
        f"/v1/invoices/{inv['id']}/payments", json={"currency": "tron:USDT"}, headers=api.headers(other)
    )
    assert response.status_code == 404


def test_attempts_per_invoice_are_bounded(api: Api) -> None:
    from paywatch.checkout.service import MAX_ATTEMPTS

    inv = create(api).json()
    for _ in range(MAX_ATTEMPTS):
        assert attempt(api, inv["id"], "tron:USDT").status_code == 201
    refused = attempt(api, inv["id"], "tron:USDT")
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "currency"


def test_hostile_bodies_get_4xx(api: Api) -> None:
    assert create(api, note="a\x00b").json()["error"]["field"] == "note"
    assert create(api, items=[{"description": "x\x00", "quantity": 1, "unit_price": "29.99"}]).status_code == 422
    assert create(api, price={"amount": "1e999999", "currency": "USD"}).json()["error"]["field"] == "price.amount"
    assert create(api, price={"amount": "NaN", "currency": "USD"}).json()["error"]["field"] == "price.amount"
    deep = b'{"price": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert api.client.post("/v1/invoices", content=deep, headers=api.headers()).status_code in (400, 413)
    inv = create(api).json()
    for body in ([1], {"currency": 5}, {"currency": "tron:USDT", "x": 1}, {}):
        response = api.client.post(f"/v1/invoices/{inv['id']}/payments", json=body, headers=api.headers())
        assert response.status_code == 422, (body, response.text)


def test_no_database_lock_is_held_while_price_apis_answer(api: Api, rates_srv: RateServer, db_url: str) -> None:
    """Regression: the rate fetch ran inside the request's transaction (SQLite: the write lock)."""
    import threading

    from sqlalchemy import event

    from paywatch.store.db import make_engine
    from paywatch.stores import create_store

    inv = create(api).json()
    rates_srv.gate = threading.Event()
    result: dict[str, int] = {}
    opener = threading.Thread(target=lambda: result.update(code=attempt(api, inv["id"], "ethereum:ETH").status_code))
    opener.start()
    assert rates_srv.arrived.wait(30)  # the attempt is now waiting for a price API
    other = make_engine(db_url)
    if db_url.startswith("sqlite"):

        @event.listens_for(other, "connect")
        def _fail_fast(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 1000")  # a held lock fails this writer in 1 s

    try:
        with session_scope(other) as session:  # another writer gets through meanwhile
            create_store(session, "concurrent", api.clock())
    finally:
        rates_srv.gate.set()
        opener.join(30)
        other.dispose()
    assert result["code"] == 201
