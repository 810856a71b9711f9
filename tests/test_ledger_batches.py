"""The ledger's per-range batches: many invoices in one call, each evaluated once, every rule kept;
a transfer another writer stores first is credited once (PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.domain.matching import Match
from paywatch.domain.transfer import Transfer, address_key
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice
from paywatch.ledger import Ledger
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, Payment, StatusHistory, UnmatchedTransfer
from paywatch.stores import create_store
from tests.conftest import PG_URL, T0, USDT_ETH, fresh_postgres_database
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)
from tests.support.worker_procs import wait_for

NOW = T0 + timedelta(minutes=5)


def _transfer(address: str, tx: int, amount: int, *, log_index: int = 0, block: int = 10) -> Transfer:
    return Transfer(
        network="ethereum",
        tx_hash=f"0x{tx:064x}",
        log_index=log_index,
        block_number=block,
        block_hash=f"0x{block:064x}",
        block_time=T0 + timedelta(minutes=1),
        from_address="0x" + "11" * 20,
        to_address=address,
        asset_key=address_key(USDT_ETH),
        amount=amount,
    )


def _invoices(engine: Engine, config: AppConfig, count: int) -> list[Invoice]:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        s.add(NetworkState(network="ethereum", tip_height=10))  # one confirmation of three at block 10
        return [
            create_invoice(s, config, store, InvoiceRequest("ethereum", "USDT", "2", "01:00"), T0) for _ in range(count)
        ]


def _events(engine: Engine) -> dict[str, list[CallbackEvent]]:
    by_invoice: dict[str, list[CallbackEvent]] = defaultdict(list)
    with Session(engine) as s:
        for event in s.exec(select(CallbackEvent).order_by(col(CallbackEvent.id))):
            by_invoice[event.invoice_id or ""].append(event)
    return by_invoice


def test_one_range_paying_many_invoices_evaluates_each_once(engine: Engine, app_config: AppConfig) -> None:
    """Full payments, a payment in two parts, a transfer read twice, an underpayment and a transfer
    to a cancelled invoice, all in one call: the same outcome as one call per transfer."""
    full, split, twice, under, cancelled = _invoices(engine, app_config, 5)
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        invoice = s.get(Invoice, cancelled.id)
        assert invoice is not None
        cancel_invoice(s, ledger, invoice, NOW, actor="test")
    seen_twice = _transfer(twice.address, 3, 2_000_000)
    matches = [
        Match(_transfer(full.address, 1, 2_000_000), full.id),
        Match(_transfer(split.address, 2, 1_500_000), split.id),
        Match(seen_twice, twice.id),
        Match(_transfer(split.address, 2, 500_000, log_index=1), split.id),  # same transaction, next log
        Match(seen_twice, twice.id),
        Match(_transfer(under.address, 4, 1_000_000), under.id),
        Match(_transfer(cancelled.address, 5, 2_000_000), cancelled.id),
    ]
    with session_scope(engine) as s:
        touched = ledger.record_matches(s, matches, NOW)
    assert touched == {full.id, split.id, twice.id, under.id}
    with session_scope(engine) as s:  # read again: nothing changes
        assert ledger.record_matches(s, matches, NOW) == set()
    with Session(engine) as s:
        rows = {i.id: i for i in s.exec(select(Invoice))}
        paid = defaultdict(list)
        for p in s.exec(select(Payment).order_by(col(Payment.id))):
            paid[p.invoice_id].append(p.amount)
        history = defaultdict(list)
        for h in s.exec(select(StatusHistory).order_by(col(StatusHistory.id))):
            history[h.invoice_id].append((h.status, h.status_version))
        inbox = [(u.to_address, u.reason) for u in s.exec(select(UnmatchedTransfer))]
    assert dict(paid) == {
        full.id: [2_000_000],
        split.id: [1_500_000, 500_000],
        twice.id: [2_000_000],
        under.id: [1_000_000],
    }
    assert {i: rows[i].status for i in touched} == {
        full.id: "WAITING_FOR_CONFIRMATIONS",
        split.id: "WAITING_FOR_CONFIRMATIONS",
        twice.id: "WAITING_FOR_CONFIRMATIONS",
        under.id: "PARTIAL",
    }
    assert rows[split.id].amount_paid == 2_000_000
    assert rows[cancelled.id].status == "CANCELLED" and rows[cancelled.id].amount_paid == 0
    assert inbox == [(cancelled.address, "invoice_cancelled")]
    events = _events(engine)
    for invoice in (full, split, twice, under):
        assert len(history[invoice.id]) == 2, history[invoice.id]  # created, then one evaluation
        types = [e.type for e in events[invoice.id]]
        received = types.count("invoice.payment_received")
        assert received == (2 if invoice is split else 1), types
        versions = [e.status_version for e in events[invoice.id]]
        assert versions == list(range(1, len(versions) + 1))
        bodies = [json.loads(e.body)["data"] for e in events[invoice.id]]
        assert [b["status_version"] for b in bodies] == versions
        assert rows[invoice.id].status_version == versions[-1] == history[invoice.id][-1][1]
        last = bodies[-1]  # the view sent with the events is the invoice as stored
        assert (last["status"], [h["status"] for h in last["history"]]) == (
            rows[invoice.id].status,
            [status for status, _ in history[invoice.id]],
        )
        assert len(last["payments"]) == len(paid[invoice.id])


# --- another writer on PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def pg_url() -> object:
    if not PG_URL:
        pytest.skip("PAYWATCH_TEST_DATABASE_URL is not set; the concurrency test needs PostgreSQL")
    yield from fresh_postgres_database()


def test_a_transfer_another_writer_stores_first_is_credited_once(
    pg_url: str, networks: dict[str, NetworkConfig]
) -> None:
    """Two writers match one transfer to two invoices (an index out of date, say). The second one
    reads nothing, then waits on the first one's uncommitted row; once that commits, its insert
    leaves the row alone and the transfer stays with the first invoice only."""
    engine = make_engine(pg_url, pool_size=4, max_overflow=0)
    config = AppConfig(settings=Settings(database_url=pg_url), networks=networks)
    first, second = _invoices(engine, config, 2)
    ledger = Ledger(networks)
    transfer = _transfer(first.address, 7, 2_000_000)
    errors: list[BaseException] = []

    holder = Session(engine)
    ledger.record_matches(holder, [Match(transfer, first.id)], NOW)
    holder.flush()  # the row is in, not committed: the other writer's insert has to wait for it

    def other_writer() -> None:
        try:
            with session_scope(engine) as s:
                assert ledger.record_matches(s, [Match(transfer, second.id)], NOW) == set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=other_writer)
    thread.start()
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )

    def second_writer_waits() -> int:
        # a transaction of its own per look: PostgreSQL keeps the pg_stat_activity it read first
        # until the transaction ends, so polling in one transaction never saw a later wait (a hang
        # whenever the first look came before the other writer blocked: seen in a stress run)
        with engine.connect() as watcher:
            return int(watcher.execute(waiting).scalar_one())

    wait_for("the second writer waits on the first one's row", second_writer_waits, 30)
    holder.commit()
    holder.close()
    thread.join()
    assert not errors, errors
    with Session(engine) as s:
        payments = list(s.exec(select(Payment)))
        rows = {i.id: i for i in s.exec(select(Invoice))}
    assert [(p.invoice_id, p.amount) for p in payments] == [(first.id, 2_000_000)]
    assert (rows[first.id].status, rows[first.id].amount_paid) == ("WAITING_FOR_CONFIRMATIONS", 2_000_000)
    assert (rows[second.id].status, rows[second.id].amount_paid, rows[second.id].status_version) == ("PENDING", 0, 1)
    assert [e.type for e in _events(engine)[second.id]] == ["invoice.created"]
    engine.dispose()
