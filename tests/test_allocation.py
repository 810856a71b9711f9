"""Deposit-target allocation: HD indexes, memos and unique amounts never collide, even across processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from paywatch.addresses import MAX_AMOUNT_OFFSET, build_watch_index, shared_address, unique_amount
from paywatch.config import AppConfig, Settings, parse_networks
from paywatch.domain.matching import Strategy
from paywatch.domain.transfer import Transfer, address_key
from paywatch.errors import ConflictError, InputError
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice, mark_paid
from paywatch.keys import derive_address
from paywatch.ledger import Ledger
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import DepositAddress, Invoice, NetworkState, Payment, Store, UnmatchedTransfer
from paywatch.stores import create_store
from tests.conftest import EVM_XPUB, PG_URL, T0, TEST_NETWORKS, TRON_XPUB, fresh_postgres_database
from tests.support.chain_clock import scanned_until
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)
from tests.support.databases import OTHER_CLIENT_BACKENDS
from tests.support.forked import ForkedProcess

PER_PROCESS = 250  # address strategy: 2 x 250 = 500 invoices at once, as the issue asks
SHARED_PER_PROCESS = 100  # memo and amount strategies: enough to collide constantly, cheaper to run
THREADS_PER_PROCESS = 2


def _config(url: str) -> AppConfig:
    networks = parse_networks(TEST_NETWORKS, source="test-networks.yaml", env={})
    return AppConfig(settings=Settings(database_url=url, allow_private_callbacks=False), networks=networks)


def _new_store(engine: Engine) -> str:
    with session_scope(engine) as s:
        return create_store(s, "shop", T0).store.id


def _create_many(url: str, store_id: str, count: int, threads: int, match: str, amount: str) -> list[str]:
    """Create ``count`` invoices from ``threads`` threads of this process; return their ids."""
    config = _config(url)
    engine = (
        make_engine(url, pool_size=threads, max_overflow=0, connect_args={"options": "-c synchronous_commit=off"})
        if url.startswith("postgres")
        else make_engine(url)
    )
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for _ in range(n):
                with session_scope(engine) as s:
                    store = s.get(Store, store_id)
                    assert store is not None
                    network = "tron" if match == "memo" else "ethereum"  # EVM transfers carry no memo
                    req = InvoiceRequest(network, "USDT", amount, "01:00", match=match)
                    inv = create_invoice(s, config, store, req, T0)
                    inv_id = inv.id
                with lock:
                    ids.append(inv_id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(count // threads + (i < count % threads),)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    engine.dispose()
    if errors:
        raise errors[0]
    return ids


def _process_main(
    url: str, store_id: str, count: int, match: str, amount: str, barrier: Barrier, out: Any
) -> None:  # pragma: no cover - runs in a child process
    try:
        barrier.wait(timeout=60)
        out.put(("ok", _create_many(url, store_id, count, THREADS_PER_PROCESS, match, amount)))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _two_processes(url: str, store_id: str, match: str, count: int, amount: str = "25.5") -> list[str]:
    """Two processes of their own (own pid, memory, connection pools), forked from the preloaded server
    of ``tests/support/forked.py`` instead of spawned: a spawned interpreter spends about 2 s of CPU
    importing paywatch before the race starts."""
    ctx = multiprocessing.get_context("forkserver")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [
        ForkedProcess(_process_main, url, store_id, count, match, amount, barrier, out, env=dict(os.environ))
        for _ in range(2)
    ]
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        assert p.wait(timeout=30) == 0
    assert [r[0] for r in results] == ["ok", "ok"], results
    return [inv_id for _, ids in results for inv_id in ids]


@pytest.fixture
def pg_url() -> Any:
    if not PG_URL:
        pytest.skip("PAYWATCH_TEST_DATABASE_URL is not set; the cross-process test needs PostgreSQL")
    yield from fresh_postgres_database()


def test_two_processes_never_share_an_address_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    store_id = _new_store(engine)
    ids = _two_processes(pg_url, store_id, "address", PER_PROCESS)
    assert len(ids) == 2 * PER_PROCESS
    with Session(engine) as s:
        rows = s.exec(select(Invoice).where(col(Invoice.id).in_(ids))).all()
        deposits = s.exec(select(DepositAddress)).all()
    engine.dispose()
    assert len(rows) == 2 * PER_PROCESS
    indexes = sorted(r.address_index for r in rows if r.address_index is not None)
    assert indexes == list(range(1, 2 * PER_PROCESS + 1))  # no gaps, no repeats; 0 is the shared address
    assert len({r.address for r in rows}) == 2 * PER_PROCESS
    assert {r.address for r in rows} == {d.address for d in deposits}
    for r in rows[:5]:
        assert r.address_index is not None and r.address == derive_address(EVM_XPUB, "evm", r.address_index)


def test_a_counter_connection_that_died_is_replaced_postgres(pg_url: str) -> None:
    """The HD counter's pool pings no connection before use: one that PostgreSQL closed (a restart,
    an idle timeout) fails its statement, and the allocation runs again on a new connection."""
    engine = make_engine(pg_url)
    config = _config(pg_url)
    store_id = _new_store(engine)

    def create() -> int | None:
        with session_scope(engine) as s:
            store = s.get(Store, store_id)
            assert store is not None
            return create_invoice(
                s, config, store, InvoiceRequest("ethereum", "USDT", "1", match="address"), T0
            ).address_index

    first = create()  # the counter's pool now holds an open connection
    killer = make_engine(pg_url, poolclass=NullPool)
    with killer.connect() as conn:
        ended = conn.execute(
            text(
                f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {OTHER_CLIENT_BACKENDS}"
            )
        ).scalar_one()
    killer.dispose()
    assert ended >= 2  # the session's pooled connection and the counter's
    second = create()
    engine.dispose()
    assert first is not None and second is not None and second > first


def test_two_processes_memo_strategy_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    store_id = _new_store(engine)
    ids = _two_processes(pg_url, store_id, "memo", SHARED_PER_PROCESS)
    with Session(engine) as s:
        rows = s.exec(select(Invoice).where(col(Invoice.id).in_(ids))).all()
    engine.dispose()
    assert len(rows) == 2 * SHARED_PER_PROCESS
    assert len({r.memo for r in rows}) == 2 * SHARED_PER_PROCESS
    assert len({r.address for r in rows}) == 1  # the store's own memo address, made once under the race
    assert rows[0].address != derive_address(TRON_XPUB, "tron", 0)


def test_two_processes_amount_strategy_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    store_id = _new_store(engine)
    ids = _two_processes(pg_url, store_id, "amount", SHARED_PER_PROCESS)
    with Session(engine) as s:
        rows = s.exec(select(Invoice).where(col(Invoice.id).in_(ids))).all()
    engine.dispose()
    amounts = sorted(r.amount for r in rows)
    assert amounts == [25_500_000 + k for k in range(1, 2 * SHARED_PER_PROCESS + 1)]
    assert all(r.open_amount == r.amount for r in rows)


# --- single-process behaviour, on SQLite and PostgreSQL ------------------------------------------


@pytest.mark.parametrize("match", ["address", "memo", "amount"])
def test_threads_in_one_process_share_nothing(db_url: str, match: str) -> None:
    engine = make_engine(db_url)
    store_id = _new_store(engine)
    ids = _create_many(db_url, store_id, 40, 4, match, "1")
    with Session(engine) as s:
        rows = s.exec(select(Invoice).where(col(Invoice.id).in_(ids))).all()
    engine.dispose()
    assert len(rows) == 40
    if match == "address":
        assert sorted(r.address_index or 0 for r in rows) == list(range(1, 41))
    elif match == "memo":
        assert len({r.memo for r in rows}) == 40
    else:
        assert sorted(r.amount for r in rows) == [1_000_000 + k for k in range(1, 41)]


def _create(
    s: Session, config: AppConfig, store: Store, amount: str, match: str, asset: str = "USDT", network: str = "ethereum"
) -> Invoice:
    return create_invoice(s, config, store, InvoiceRequest(network, asset, amount, "00:10", match=match), T0)


def test_memo_strategy_unique_memos_on_shared_address(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        rows = [_create(s, app_config, store, "5", "memo", network="tron") for _ in range(50)]
        assert len({r.memo for r in rows}) == 50
        assert all(r.memo and len(r.memo) >= 8 and r.memo.isalnum() and r.memo.isupper() for r in rows)
        # the store's own memo address (its first derivation index), not the network's index 0
        assert {r.address for r in rows} == {derive_address(TRON_XPUB, "tron", 1)}
        assert shared_address(app_config.networks["tron"]) != rows[0].address
        assert all(r.address_index is None for r in rows)


def test_amount_strategy_unique_among_open_and_released_when_closed(engine: Engine, app_config: AppConfig) -> None:
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        a = _create(s, app_config, store, "25.5", "amount")
        b = _create(s, app_config, store, "25.5", "amount")
        c = _create(s, app_config, store, "25.500002", "amount")  # base collides with b's amount
        eth = _create(s, app_config, store, "0.000000000000000001", "amount", asset="ETH")  # other asset, own range
        assert (a.amount, b.amount, c.amount) == (25_500_001, 25_500_002, 25_500_003)
        assert eth.amount == 2
        cancel_invoice(s, ledger, a, T0, actor="test")
        assert a.open_amount == 25_500_001  # kept through the late window, see the test below
        again = _create(s, app_config, store, "25.5", "amount")
        assert again.amount == 25_500_004
        index = build_watch_index(s, app_config.networks["ethereum"])
        assert index.is_watched(again.address)


def test_amount_released_after_expiry_and_late_window(engine: Engine, app_config: AppConfig) -> None:
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        store.late_window_seconds = 3600
        first = _create(s, app_config, store, "7", "amount")
        first_id = first.id
    scanned_until(engine, "ethereum", T0 + timedelta(minutes=11))
    with session_scope(engine) as s:
        ledger.expiry_sweep(s, T0 + timedelta(minutes=11))
        inv = s.get(Invoice, first_id)
        assert inv is not None and inv.status == "EXPIRED"
        assert inv.open_amount == 7_000_001  # still reserved: a late payment may arrive within the late window
    with session_scope(engine) as s:
        ledger.expiry_sweep(s, T0 + timedelta(minutes=10, hours=1))
        inv = s.get(Invoice, first_id)
        assert inv is not None and inv.open_amount is None
        store_row = s.get(Store, inv.store_id)
        assert store_row is not None
        assert _create(s, app_config, store_row, "7", "amount").amount == 7_000_001


def test_unique_amount_across_a_digit_boundary(engine: Engine, app_config: AppConfig) -> None:
    """9.999999 -> 10.000000 changes the number of digits; text comparison on SQLite used to miss it."""
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        first = _create(s, app_config, store, "9.999999", "amount")
        assert first.amount == 10_000_000
        second = _create(s, app_config, store, "9.999999", "amount")
        assert second.amount == 10_000_001
        third = _create(s, app_config, store, "9.999998", "amount")
        assert third.amount == 9_999_999
        fourth = _create(s, app_config, store, "9.999998", "amount")
        assert fourth.amount == 10_000_002


def test_unique_amount_gives_up_with_conflict(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        first = _create(s, app_config, store, "1", "amount")
        s.flush()
        table = Invoice.__table__  # type: ignore[attr-defined]
        row = dict(s.connection().execute(sa_select(table).where(table.c.id == first.id)).mappings().one())
        fill = [
            {**row, "id": f"inv_fill{k}", "amount": 1_000_000 + k, "open_amount": 1_000_000 + k}
            for k in range(2, MAX_AMOUNT_OFFSET + 1)  # every other offset is taken
        ]
        s.connection().execute(sa_insert(table), fill)
        with pytest.raises(ConflictError) as info:
            unique_amount(s, "ethereum", first.address, first.asset_key, 1_000_000)
        assert info.value.field == "amount"
        s.rollback()


def test_address_strategy_index_zero_is_reserved(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        inv = _create(s, app_config, store, "1", "address")
        assert inv.address_index == 1
        assert address_key(inv.address) != address_key(shared_address(app_config.networks["ethereum"]) or "")
        assert inv.match_strategy == Strategy.ADDRESS.value


@pytest.mark.parametrize(
    "expires_in",
    ["²", "١٢٠", 10**18, 2**70, -5, "999:59", "1e3", "00:00", "01:00\n", True, 59],
    ids=[
        "superscript-digit",
        "arabic-digits",
        "huge-int",
        "2**70",
        "negative",
        "too-long",
        "exponent",
        "zero",
        "trailing-newline",
        "bool",
        "59s",
    ],
)
def test_bad_expires_in_is_an_input_error_naming_the_field(
    engine: Engine, app_config: AppConfig, expires_in: object
) -> None:
    """These reached int()/timedelta() and raised bare ValueError/OverflowError (a 500) before the fix."""
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        with pytest.raises(InputError) as info:
            create_invoice(s, app_config, store, InvoiceRequest("ethereum", "USDT", "1", expires_in), T0)
        assert info.value.field == "expires_in"
        assert s.exec(select(Invoice)).all() == []


def test_waiting_invoice_keeps_its_unique_amount_past_the_late_window(engine: Engine, app_config: AppConfig) -> None:
    """A payment seen near the deadline may wait for confirmations (or be re-mined after a reorg) past the
    late window; while the invoice is still open its amount stays reserved so nobody else is issued it."""
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        store.late_window_seconds = 0
        inv = _create(s, app_config, store, "3", "amount")
        inv_id, address = inv.id, inv.address
        s.add(NetworkState(network="ethereum", tip_height=10))
    transfer = Transfer(
        network="ethereum",
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        block_number=10,
        block_hash="0x" + "cd" * 32,
        block_time=T0 + timedelta(minutes=9),
        from_address="0x" + "11" * 20,
        to_address=address,
        asset_key=address_key(app_config.networks["ethereum"].assets["USDT"].contract or ""),
        amount=3_000_001,
    )
    with session_scope(engine) as s:
        matches, unmatched = build_watch_index(s, app_config.networks["ethereum"]).match_all([transfer])
        assert unmatched == [] and [m.invoice_id for m in matches] == [inv_id]
        ledger.record_matches(s, matches, T0 + timedelta(minutes=9))
    with session_scope(engine) as s:
        ledger.expiry_sweep(s, T0 + timedelta(hours=5))
        waiting = s.get(Invoice, inv_id)
        assert waiting is not None and waiting.status == "WAITING_FOR_CONFIRMATIONS"
        assert waiting.open_amount == 3_000_001
        store_row = s.get(Store, waiting.store_id)
        assert store_row is not None
        assert _create(s, app_config, store_row, "3", "amount").amount == 3_000_002


def _usdt_transfer(config: AppConfig, to: str, amount: int, n: int, minute: int) -> Transfer:
    return Transfer(
        network="ethereum",
        tx_hash=f"0x{n:064x}",
        log_index=0,
        block_number=10 + n,
        block_hash=f"0x{n:064x}",
        block_time=T0 + timedelta(minutes=minute),
        from_address="0x" + "11" * 20,
        to_address=to,
        asset_key=address_key(config.networks["ethereum"].assets["USDT"].contract or ""),
        amount=amount,
    )


@pytest.mark.parametrize("close", ["cancel", "mark-paid", "completed"])
def test_unique_amount_is_not_reissued_inside_the_late_window(
    engine: Engine, app_config: AppConfig, close: str
) -> None:
    """A closed invoice's unique amount went straight back to the pool: the next invoice was issued it,
    and the first customer paying again (or late, after a cancel) completed another customer's invoice."""
    ledger = Ledger(app_config.networks)
    network = app_config.networks["ethereum"]
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        store.late_window_seconds = 3600
        s.add(NetworkState(network="ethereum", tip_height=100))
        first = _create(s, app_config, store, "7", "amount")  # expires at T0 + 10 min
        first_id, first_amount, address = first.id, first.amount, first.address
    with session_scope(engine) as s:
        inv = s.get(Invoice, first_id)
        assert inv is not None
        if close == "cancel":
            cancel_invoice(s, ledger, inv, T0, actor="test")
        elif close == "mark-paid":
            mark_paid(s, ledger, inv, T0, actor="test")
        else:
            matches, _ = build_watch_index(s, network).match_all(
                [_usdt_transfer(app_config, address, first_amount, 1, 1)]
            )
            ledger.record_matches(s, matches, T0 + timedelta(minutes=2))
            assert inv.status == "COMPLETED"
    with session_scope(engine) as s:
        ledger.expiry_sweep(s, T0 + timedelta(minutes=30))
        store_row = s.get(Store, store.id)
        assert store_row is not None
        second = _create(s, app_config, store_row, "7", "amount")
        second_id = second.id
        assert second.amount != first_amount
    again = _usdt_transfer(app_config, address, first_amount, 2, 40)  # the first customer pays again, late
    with session_scope(engine) as s:
        matches, unmatched = build_watch_index(s, network).match_all([again])
        assert [m.invoice_id for m in matches] + [u.invoice_id for u in unmatched] == [first_id]
        ledger.record_matches(s, matches, T0 + timedelta(minutes=41))
        ledger.record_unmatched(s, unmatched, T0 + timedelta(minutes=41))
    with Session(engine) as s:
        other = s.get(Invoice, second_id)
        assert other is not None and (other.amount_paid, other.status) == (0, "PENDING")
        inbox = s.exec(select(UnmatchedTransfer)).all()
        credited = s.exec(select(Payment).where(Payment.tx_hash == again.tx_hash)).all()
        if close == "cancel":
            assert [(u.reason, u.hint_invoice_id) for u in inbox] == [("invoice_cancelled", first_id)]
            assert credited == []
        else:
            assert [(p.invoice_id, p.late) for p in credited] == [(first_id, True)]
            row = s.get(Invoice, first_id)
            assert row is not None and "paid_late" in row.flags
    with session_scope(engine) as s:  # after the late window the amount is free again
        ledger.expiry_sweep(s, T0 + timedelta(minutes=71))
        row = s.get(Invoice, first_id)
        assert row is not None and row.open_amount is None
        store_row = s.get(Store, store.id)
        assert store_row is not None
        assert _create(s, app_config, store_row, "7", "amount").amount == first_amount
