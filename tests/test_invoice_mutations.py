"""Cancel and mark-paid against concurrent credits: one locked path, status_version strictly increasing."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.domain.matching import Match
from paywatch.domain.transfer import Transfer, address_key
from paywatch.errors import ConflictError
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice, get_invoice, mark_paid
from paywatch.ledger import Ledger
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, Payment, StatusHistory, UnmatchedTransfer
from paywatch.stores import create_store
from tests.conftest import PG_URL, T0, USDT_ETH, fresh_postgres_database
from tests.support.api_helpers import make_api

NOW = T0 + timedelta(minutes=5)


def _transfer(address: str, n: int, amount: int = 1_000_000) -> Transfer:
    return Transfer(
        network="ethereum",
        tx_hash=f"0x{n:064x}",
        log_index=0,
        block_number=10,
        block_hash="0x" + "aa" * 32,
        block_time=T0 + timedelta(minutes=1),
        from_address="0x" + "11" * 20,
        to_address=address,
        asset_key=address_key(USDT_ETH),
        amount=amount,
    )


def _new_invoices(engine: Engine, config: AppConfig, count: int, amount: str = "2") -> tuple[str, list[Invoice]]:
    with session_scope(engine) as s:
        created = create_store(s, "shop", T0)
        s.add(NetworkState(network="ethereum", tip_height=10))
        invoices = [
            create_invoice(s, config, created.store, InvoiceRequest("ethereum", "USDT", amount, "01:00"), T0)
            for _ in range(count)
        ]
    return created.api_key, invoices


def _assert_versions(engine: Engine, invoice_id: str) -> None:
    _assert_all_versions(engine, [invoice_id])


def _assert_all_versions(engine: Engine, invoice_ids: list[str]) -> None:
    """Events carry 1..n without gaps or repeats; history versions are distinct; the row has the last one."""
    events: dict[str, list[CallbackEvent]] = defaultdict(list)
    history: dict[str, list[int]] = defaultdict(list)
    with Session(engine) as s:
        for e in s.exec(select(CallbackEvent).order_by(col(CallbackEvent.id))):
            events[e.invoice_id or ""].append(e)
        for h in s.exec(select(StatusHistory).order_by(col(StatusHistory.id))):
            history[h.invoice_id].append(h.status_version)
        rows = {r.id: r for r in s.exec(select(Invoice))}
    for invoice_id in invoice_ids:
        versions = [e.status_version for e in events[invoice_id]]
        assert versions == list(range(1, len(versions) + 1)), (
            invoice_id,
            [(e.type, e.status_version) for e in events[invoice_id]],
        )
        assert [json.loads(e.body)["data"]["status_version"] for e in events[invoice_id]] == versions
        assert len(set(history[invoice_id])) == len(history[invoice_id]), history[invoice_id]
        assert rows[invoice_id].status_version == versions[-1]


@pytest.mark.parametrize("action", [cancel_invoice, mark_paid], ids=["cancel", "mark-paid"])
def test_stale_read_then_credit_then_action(engine: Engine, app_config: AppConfig, action: object) -> None:
    """The API reads the invoice, a credit commits, then the action runs on what it read.

    Before the fix the action trusted the stale read: cancel produced CANCELLED with money paid, and
    both changes wrote the same status_version.
    """
    ledger = Ledger(app_config.networks)
    _, (inv,) = _new_invoices(engine, app_config, 1)
    with Session(engine, expire_on_commit=False) as api_session:
        stale = get_invoice(api_session, None, inv.id)  # the handler's read, no lock
        api_session.commit()
        with session_scope(engine) as s:  # the scanner credits in between
            ledger.record_matches(s, [Match(_transfer(inv.address, 1), inv.id)], NOW)
        if action is cancel_invoice:
            with pytest.raises(ConflictError) as info:
                cancel_invoice(api_session, ledger, stale, NOW, actor="api")
            assert info.value.status_code == 409 and info.value.field == "status"
            api_session.rollback()
        else:
            mark_paid(api_session, ledger, stale, NOW, actor="api")
            api_session.commit()
    with Session(engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        assert row.amount_paid == 1_000_000
        assert row.status == ("PARTIAL" if action is cancel_invoice else "COMPLETED")
    _assert_versions(engine, inv.id)


# --- many threads on PostgreSQL -----------------------------------------------------------------

ROUNDS = 400  # 200 cancels and 200 mark-paids, each racing a credit (1,000 took 165 s of a loaded suite)
PAIRS = 4  # concurrent (API call, credit) pairs; each pair races on its own invoices, round after round


@pytest.fixture
def pg_url() -> object:
    if not PG_URL:
        pytest.skip("PAYWATCH_TEST_DATABASE_URL is not set; the concurrency test needs PostgreSQL")
    yield from fresh_postgres_database()


@pytest.mark.slow
def test_api_cancel_and_mark_paid_race_credits_postgres(pg_url: str, networks: dict[str, NetworkConfig]) -> None:
    """400 rounds: the API cancels or marks paid while the ledger credits the same invoice.

    Whatever the interleaving, the outcome is one of the serial ones: no CANCELLED with money, no
    payment lost, no status_version written twice.
    """
    engine = make_engine(
        pg_url, pool_size=2 * PAIRS + 2, max_overflow=0, connect_args={"options": "-c synchronous_commit=off"}
    )
    ledger = Ledger(networks)
    config = AppConfig(settings=Settings(database_url=pg_url, allow_private_callbacks=False), networks=networks)
    key, invoices = _new_invoices(engine, config, ROUNDS)
    api = make_api(engine, config)
    api.key = key
    outcomes: dict[str, int] = {}
    errors: list[BaseException] = []
    barriers = [threading.Barrier(2) for _ in range(PAIRS)]

    def api_side(pair: int) -> None:
        try:
            with TestClient(api.app) as client:  # one event loop per thread, not one per request
                for n in range(pair, ROUNDS, PAIRS):
                    inv = invoices[n]
                    verb = "cancel" if n % 2 == 0 else "mark-paid"
                    barriers[pair].wait(timeout=60)
                    response = client.post(f"/v1/invoices/{inv.id}/{verb}", headers=api.headers())
                    outcomes[inv.id] = response.status_code
        except BaseException as exc:
            errors.append(exc)
            barriers[pair].abort()

    def credit_side(pair: int) -> None:
        try:
            for n in range(pair, ROUNDS, PAIRS):
                inv = invoices[n]
                barriers[pair].wait(timeout=60)
                with session_scope(engine) as s:
                    ledger.record_matches(s, [Match(_transfer(inv.address, n), inv.id)], NOW)
        except BaseException as exc:
            errors.append(exc)
            barriers[pair].abort()

    threads = [threading.Thread(target=f, args=(p,)) for p in range(PAIRS) for f in (api_side, credit_side)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]

    with Session(engine) as s:
        rows = {r.id: r for r in s.exec(select(Invoice))}
        paid: dict[str, int] = defaultdict(int)
        for p in s.exec(select(Payment).where(col(Payment.orphaned).is_(False))):
            paid[p.invoice_id] += p.amount
        inbox = {u.hint_invoice_id: u for u in s.exec(select(UnmatchedTransfer))}
    counts: dict[tuple[str, int, str], int] = defaultdict(int)
    for n, inv in enumerate(invoices):
        row = rows[inv.id]
        code = outcomes[inv.id]
        counts[("cancel" if n % 2 == 0 else "mark-paid", code, row.status)] += 1
        if n % 2 == 0:
            if code == 200:  # cancelled first: the credit went to the inbox, not to the invoice
                assert row.status == "CANCELLED" and row.amount_paid == 0 and paid[inv.id] == 0, inv.id
                assert inbox[inv.id].reason == "invoice_cancelled"
            else:  # credited first: the cancel was refused
                assert code == 409, code
                assert row.status == "PARTIAL" and row.amount_paid == 1_000_000 == paid[inv.id], inv.id
        else:
            assert code == 200, code
            assert row.status == "COMPLETED" and "marked_paid" in row.flags
            assert row.amount_paid == 1_000_000 == paid[inv.id], inv.id  # the credit is never lost
    _assert_all_versions(engine, [inv.id for inv in invoices])
    engine.dispose()
    print("outcomes:", dict(counts))
