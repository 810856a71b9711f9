"""Fiat invoices as first-class merchant objects: the worker re-evaluates them when an attempt's
crypto invoice changes or their window closes, they send signed callbacks of their own (once per
change, in order), they are listed by ``GET /v1/invoices?kind=...``, and the rate history lives in
the database (scheduled refresh, shared by API processes, kept across restarts).

Payments are recorded through the real Ledger as a scanner would; callbacks are delivered by the
real dispatcher to a real local receiver; rates come from the local rate server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlmodel import col, select

from paywatch.api.app import create_app
from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.checkout.context import Checkout
from paywatch.checkout.jobs import CheckoutJobs
from paywatch.checkout.models import AttemptChange, StoredRate
from paywatch.checkout.rates import RateBook
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.config import AppConfig, Settings
from paywatch.domain.matching import Match
from paywatch.domain.transfer import Transfer, address_key
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, NetworkState, Store
from paywatch.worker import Worker
from tests.conftest import USDT_TRON
from tests.support.api_helpers import Api
from tests.support.callback_receiver import Receiver, verify
from tests.support.rate_server import RateServer
from tests.test_checkout_api import CB, CG, KR, api, attempt, create, get, rates_srv  # noqa: F401  (fixtures)

_tx = itertools.count(1)


def jobs(api: Api, config: AppConfig) -> CheckoutJobs:  # noqa: F811
    return CheckoutJobs(config, api.engine, api.app.state.checkout, api.clock)


def tron_pay(api: Api, config: AppConfig, payment: dict[str, Any], units: int, *, block: int, final: int) -> None:  # noqa: F811
    """A tron USDT transfer to the attempt's address in ``block``; the node's solidified height is ``final``."""
    transfer = Transfer(
        network="tron",
        tx_hash=f"{next(_tx):064x}",
        log_index=0,
        block_number=block,
        block_hash=f"{block:064x}",
        block_time=api.clock(),
        from_address="T" + "1" * 33,
        to_address=payment["address"],
        asset_key=address_key(USDT_TRON),
        amount=units,
        memo=payment["memo"],
    )
    with session_scope(api.engine) as session:
        set_heights(session, api, final)
        Ledger(config.networks).record_matches(session, [Match(transfer, payment["invoice_id"])], api.clock())


def set_heights(session: Any, api: Api, final: int) -> None:  # noqa: F811
    state = session.get(NetworkState, "tron") or NetworkState(network="tron")
    state.tip_height = state.cursor_height = max(final, 200)
    state.final_height = final
    state.last_scan_at = api.clock()
    session.add(state)
    session.flush()


def confirm(api: Api, config: AppConfig, final: int) -> None:  # noqa: F811
    """The node solidifies up to ``final``; the worker's confirmations refresh runs."""
    with session_scope(api.engine) as session:
        set_heights(session, api, final)
        Ledger(config.networks).refresh_confirmations(session, "tron", api.clock())


def fiat_events(api: Api, fiat_id: str) -> list[CallbackEvent]:  # noqa: F811
    with session_scope(api.engine) as session:
        stmt = select(CallbackEvent).where(CallbackEvent.fiat_invoice_id == fiat_id).order_by(col(CallbackEvent.id))
        return [e for e in session.exec(stmt) if e.type != "invoice.viewed"]


def types(events: list[CallbackEvent]) -> list[str]:
    return [e.type for e in events]


def test_worker_sends_each_change_once_in_order(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    worker = jobs(api, app_config)
    inv = create(api).json()
    payment = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    tron_pay(api, app_config, payment, 10_000_000, block=100, final=150)
    with session_scope(api.engine) as session:
        assert len(list(session.exec(select(AttemptChange)))) == 1  # queued with the crypto change
    assert worker.settle() == 1
    assert types(fiat_events(api, inv["id"])) == ["invoice.payment_received", "invoice.partial"]
    assert worker.settle() == 0 and get(api, inv["id"])["status"] == "PARTIAL"  # nothing twice
    assert len(fiat_events(api, inv["id"])) == 2
    tron_pay(api, app_config, payment, 19_990_000, block=160, final=150)  # seen, not solidified yet
    assert worker.settle() == 1
    confirm(api, app_config, final=200)
    assert worker.settle() == 1
    events = fiat_events(api, inv["id"])
    assert types(events) == [
        "invoice.payment_received",
        "invoice.partial",
        "invoice.payment_received",
        "invoice.waiting_for_confirmations",
        "invoice.completed",
    ]
    assert [e.status_version for e in events] == [1, 2, 3, 4, 5]
    assert all(e.invoice_id is None and e.store_id == api.store_id for e in events)
    partial = json.loads(events[1].body)["data"]
    assert partial["id"] == inv["id"] and partial["status"] == "PARTIAL" and partial["status_version"] == 2
    assert partial["paid"] == {"amount": "10.00", "currency": "USD"}
    assert partial["remaining"] == {"amount": "19.99", "currency": "USD"}
    assert partial["price"] == {"amount": "29.99", "currency": "USD"}
    done = get(api, inv["id"])
    assert done["status"] == "COMPLETED" and done["status_version"] == 5
    listed = api.client.get(f"/v1/invoices/{inv['id']}/callbacks", headers=api.headers()).json()["data"]
    assert [e["type"] for e in listed if e["type"] != "invoice.viewed"] == types(events)
    with session_scope(api.engine) as session:
        assert list(session.exec(select(AttemptChange))) == []  # consumed


def test_a_read_and_the_worker_never_both_send_a_change(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    worker = jobs(api, app_config)
    inv = create(api).json()
    payment = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    for n in range(3):
        tron_pay(api, app_config, payment, 1_000_000, block=100 + n, final=150)
        threads = [threading.Thread(target=worker.settle)] + [
            threading.Thread(target=get, args=(api, inv["id"])) for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    events = fiat_events(api, inv["id"])
    versions = [e.status_version for e in events]
    assert versions == list(range(1, len(versions) + 1))  # no change decided twice
    assert types(events) == ["invoice.payment_received", "invoice.partial"] + ["invoice.payment_received"] * 2


def test_window_closing_is_noticed_by_the_worker(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    worker = jobs(api, app_config)
    untouched = create(api, expires_in=120).json()
    partly = create(api, expires_in=120).json()
    payment = attempt(api, partly["id"], "tron:USDT").json()["payments"][0]
    tron_pay(api, app_config, payment, 5_000_000, block=100, final=150)
    worker.settle()
    api.clock.advance(minutes=3)
    assert worker.settle() == 2
    assert types(fiat_events(api, untouched["id"])) == ["invoice.expired"]
    assert types(fiat_events(api, partly["id"]))[-1] == "invoice.partially_expired"
    assert worker.settle() == 0


def test_a_reorg_reverts_the_fiat_invoice_too(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    worker = jobs(api, app_config)
    inv = create(api).json()
    payment = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
    tron_pay(api, app_config, payment, 10_000_000, block=180, final=150)
    worker.settle()
    with session_scope(api.engine) as session:
        Ledger(app_config.networks).orphan_from(session, "tron", 170, api.clock())
    assert worker.settle() == 1
    assert types(fiat_events(api, inv["id"]))[-1] == "invoice.payment_reverted"
    assert get(api, inv["id"])["status"] == "PENDING"


def test_fiat_callbacks_are_signed_and_delivered_in_order(api: Api, app_config: AppConfig, tmp_path: Any) -> None:  # noqa: F811
    worker = jobs(api, app_config)
    with Receiver() as receiver:
        with session_scope(api.engine) as session:
            store = session.get(Store, api.store_id)
            assert store is not None
            store.callback_url, secret = receiver.url(), store.webhook_secret
            session.add(store)
        inv = create(api).json()
        payment = attempt(api, inv["id"], "tron:USDT").json()["payments"][0]
        tron_pay(api, app_config, payment, 10_000_000, block=100, final=150)
        worker.settle()
        tron_pay(api, app_config, payment, 19_990_000, block=100 + 1, final=150)
        worker.settle()
        settings = Settings(database_url="sqlite://", networks=tmp_path / "n.yaml", allow_private_callbacks=True)
        dispatcher = Dispatcher(api.engine, settings, api.clock, rng=random.Random(1))
        claimed = dispatcher._claim(api.clock(), None)
        mine = [job for job in claimed if inv["id"] in job.body.decode()[:200]]
        assert len(mine) == 1  # only the oldest pending event of a fiat invoice is claimable
        api.clock.advance(hours=1)  # past the claim's lease

        async def deliver() -> None:
            await dispatcher.run_once()
            await dispatcher.aclose()

        asyncio.run(deliver())
        payloads = [verify(r, secret) for r in receiver.received]
    fiat = [p for p in payloads if p["data"]["id"] == inv["id"]]
    assert [p["type"] for p in fiat] == [
        "invoice.payment_received",
        "invoice.partial",
        "invoice.payment_received",
        "invoice.completed",
    ]
    assert [p["data"]["status_version"] for p in fiat] == [1, 2, 3, 4]
    assert fiat[-1]["data"]["paid"]["amount"] == "29.99" and fiat[-1]["data"]["remaining"]["amount"] == "0.00"


def test_list_tells_fiat_and_crypto_apart(api: Api) -> None:  # noqa: F811
    crypto = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "5"}, headers=api.headers()
    ).json()
    api.clock.advance(seconds=1)
    fiat = create(api).json()
    api.clock.advance(seconds=1)
    attempt_id = attempt(api, fiat["id"], "tron:USDT").json()["payments"][0]["invoice_id"]

    def ids(query: str) -> list[str]:
        response = api.client.get(f"/v1/invoices{query}", headers=api.headers())
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert ids("") == ids("?kind=crypto") == [attempt_id, crypto["id"]]  # as before: crypto only
    assert ids("?kind=fiat") == [fiat["id"]]
    assert ids("?kind=all") == [attempt_id, fiat["id"], crypto["id"]]
    listed = api.client.get("/v1/invoices?kind=fiat", headers=api.headers()).json()["data"][0]
    assert listed["price"] == {"amount": "29.99", "currency": "USD"} and listed["invoice_url"] == fiat["invoice_url"]
    assert ids("?kind=fiat&status=PENDING") == [fiat["id"]] and ids("?kind=fiat&status=COMPLETED") == []
    pages, cursor = [], ""
    while True:
        body = api.client.get(f"/v1/invoices?kind=all&limit=1{cursor}", headers=api.headers()).json()
        pages += [item["id"] for item in body["data"]]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert pages == ids("?kind=all")
    bad_queries = (("?kind=both", "kind"), ("?kind=fiat&status=PAID", "status"), ("?kind=all&cursor=chk_x", "cursor"))
    for query, field in bad_queries:
        bad = api.client.get(f"/v1/invoices{query}", headers=api.headers())
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text


# --- rates in the database ---------------------------------------------------------------------------


def fresh_checkout(api: Api) -> Checkout:  # noqa: F811
    """Another process (or the same after a restart): a new rate book, nothing in memory."""
    old: Checkout = api.app.state.checkout
    return Checkout(RateBook(old.rates.config, httpx.Client(timeout=5), EcbConverter()), old.settings)


def restart(api: Api, config: AppConfig) -> None:  # noqa: F811
    api.app = create_app(config, engine=api.engine, clock=api.clock, checkout=fresh_checkout(api))
    api.client = TestClient(api.app, raise_server_exceptions=False)


def set_eth(srv: RateServer, price: str) -> None:
    srv.set(CG, 200, b'{"ethereum": {"usd": %s}}' % price.encode())
    srv.set(KR, 200, b'{"error": [], "result": {"X": {"c": ["%s", "1"]}}}' % price.encode())
    srv.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "%s"}}}' % price.encode())


def test_scheduled_refresh_fetches_only_while_checkout_is_in_use(
    api: Api,  # noqa: F811
    app_config: AppConfig,
    rates_srv: RateServer,  # noqa: F811
) -> None:
    worker = jobs(api, app_config)
    assert worker.refresh_rates() == 0 and rates_srv.hits == []  # no fiat invoice: no price API is asked
    create(api)
    assert worker.refresh_rates() >= 1
    asked = " ".join(rates_srv.hits)
    assert "ethereum" in asked and "TRX" in asked and "USDT" not in asked  # every offered asset; USDT is fixed
    with session_scope(api.engine) as session:
        stored = {(r.asset, r.fiat): r for r in session.exec(select(StoredRate))}
    assert ("ETH", "USD") in stored and ("USDT", "USD") not in stored
    assert stored[("ETH", "USD")].price == "3012.45" and stored[("ETH", "USD")].sources == "coinbase,coingecko,kraken"


def test_api_processes_use_the_rates_the_worker_stored(
    api: Api,  # noqa: F811
    app_config: AppConfig,
    rates_srv: RateServer,  # noqa: F811
) -> None:
    inv = create(api).json()
    jobs(api, app_config).refresh_rates()
    for path in (CG, KR, CB):
        rates_srv.set(path, 500, b"")
    seen = len(rates_srv.hits)
    restart(api, app_config)  # another API process: nothing in its memory
    api.clock.advance(seconds=30)
    opened = attempt(api, inv["id"], "ethereum:ETH")
    assert opened.status_code == 201, opened.text
    assert opened.json()["payments"][0]["rate"] == "3012.45" and len(rates_srv.hits) == seen  # no fetch


def test_stale_stored_rate_refuses_new_attempts(
    api: Api,  # noqa: F811
    app_config: AppConfig,
    rates_srv: RateServer,  # noqa: F811
) -> None:
    inv = create(api).json()
    jobs(api, app_config).refresh_rates()
    for path in (CG, KR, CB):
        rates_srv.set(path, 500, b"")
    api.clock.advance(minutes=3)  # max age 2 min; the worker's next refreshes fail
    assert jobs(api, app_config).refresh_rates() == 0
    refused = attempt(api, inv["id"], "ethereum:ETH")
    assert refused.status_code == 503 and "stale" in refused.json()["error"]["message"]


def test_after_a_restart_a_late_payment_is_valued_at_its_block_time_rate(
    api: Api,  # noqa: F811
    app_config: AppConfig,
    rates_srv: RateServer,  # noqa: F811
) -> None:
    from tests.test_checkout_api import pay

    inv = create(api).json()
    first = attempt(api, inv["id"], "ethereum:ETH").json()["payments"][0]
    api.clock.advance(minutes=20)  # the lock (15 min) ran out; the invoice window (24 h) did not
    set_eth(rates_srv, "1506.225")
    jobs(api, app_config).refresh_rates()  # the worker's scheduled refresh at that time
    restart(api, app_config)
    pay(api, app_config, first, int(Decimal(first["crypto_amount"]) * 10**18))
    got = get(api, inv["id"])
    assert got["status"] == "PARTIAL" and "after_rate_lock" in got["flags"]
    assert Decimal(got["remaining"]["amount"]) == Decimal("15.00")


def test_history_older_than_its_window_is_pruned(
    api: Api,  # noqa: F811
    app_config: AppConfig,
    rates_srv: RateServer,  # noqa: F811
) -> None:
    create(api, expires_in=30 * 86400)
    worker = jobs(api, app_config)
    worker.refresh_rates()
    api.clock.advance(days=8)  # history_seconds: 7 days
    worker.refresh_rates()
    with session_scope(api.engine) as session:
        when = {r.fetched_at for r in session.exec(select(StoredRate))}
    assert when == {api.clock()}


def test_the_worker_schedules_both_checkout_jobs(api: Api, app_config: AppConfig) -> None:  # noqa: F811
    worker = Worker(app_config, api.engine, clock=api.clock, checkout=api.app.state.checkout, checkout_seconds=0.5)
    scheduler = worker.build_scheduler()
    jobs_by_id = {job.id: job for job in scheduler.get_jobs()}
    assert jobs_by_id["rates"].trigger.interval == timedelta(seconds=60)  # refresh_seconds
    assert jobs_by_id["checkout"].trigger.interval == timedelta(seconds=0.5)
