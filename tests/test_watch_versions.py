"""Watch versions (migration 0011_watchindex): every write that changes what matching sees bumps the
network's version at commit, and a scanner's WatchIndexCache picks the change up on its next
``get()`` (the next scan step) by reading only the changed invoices, never by a restart."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason
from paywatch.domain.transfer import NATIVE, Transfer
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice, mark_paid
from paywatch.ledger import Ledger
from paywatch.scanner import WatchIndexCache
from paywatch.store.db import read_scope, session_scope
from paywatch.store.models import Invoice, Store
from paywatch.store.watch import EVERY_NETWORK, read_mark, read_versions, stamp_before_commit
from paywatch.stores import create_store, update_store
from tests.conftest import T0

_tx = count(1)


def _transfer(to: str, amount: int, at: datetime = T0) -> Transfer:
    tx = "0x" + f"{next(_tx):064x}"
    return Transfer("ethereum", tx, -1, 100, "0x" + "cd" * 32, at, "0x" + "11" * 20, to, NATIVE, amount)


def _match(cache: WatchIndexCache, transfer: Transfer) -> Match | Unmatched | None:
    return cache.get().match(transfer)


def _store(engine: Engine) -> Store:
    with session_scope(engine) as s:
        return create_store(s, "shop", T0).store


def _invoice(engine: Engine, config: AppConfig, store: Store, amount: str = "1", **kw: object) -> Invoice:
    with session_scope(engine) as s:
        return create_invoice(s, config, store, InvoiceRequest("ethereum", "ETH", amount, **kw), T0)  # type: ignore[arg-type]


def test_a_commit_stamps_its_invoices_once_below_the_next_horizon(engine: Engine, app_config: AppConfig) -> None:
    store = _store(engine)
    with read_scope(engine) as s:
        before = read_mark(s, "ethereum")
    with session_scope(engine) as s:
        made = [create_invoice(s, app_config, store, InvoiceRequest("ethereum", "ETH", "1"), T0) for _ in range(3)]
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        create_invoice(s, app_config, store, InvoiceRequest("ethereum", "ETH", "1"), T0)
        raise RuntimeError("rolled back: no stamp")
    with read_scope(engine) as s:
        after = read_mark(s, "ethereum")
        seqs = s.exec(select(Invoice.watch_seq).where(Invoice.network == "ethereum")).all()
    assert len(made) == 3 and len(set(seqs)) == 1  # one stamp per commit
    assert before.horizon <= seqs[0] < after.horizon and seqs[0] not in after.pending  # new, and ended
    # the counters are not touched by invoices on PostgreSQL (no row every creation would queue on)
    assert read_versions_now(engine) == ((0, 0) if engine.dialect.name == "postgresql" else (1, 0))
    with session_scope(engine) as s:  # a status change is not a watch change
        cancel_invoice(s, Ledger(app_config.networks), made[0], T0, actor="test")
    with read_scope(engine) as s:
        assert s.exec(select(Invoice.watch_seq).where(Invoice.id == made[0].id)).one() == seqs[0]


def read_versions_now(engine: Engine) -> tuple[int, int]:
    with read_scope(engine) as s:
        return read_versions(s, "ethereum")


def test_an_invoice_committed_after_a_later_one_is_still_read(engine: Engine, app_config: AppConfig) -> None:
    """Commits in another order than their stamps: the scanner's read between them must not move
    past the slower one. On PostgreSQL a second creation commits while the first is stamped but not
    committed (SQLite serialises writers: there the scanner reads while the first one is open)."""
    store = _store(engine)
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    first = _invoice(engine, app_config, store)
    assert isinstance(_match(cache, _transfer(first.address, 10**18)), Match)
    with session_scope(engine) as slow_session:
        slow = create_invoice(slow_session, app_config, store, InvoiceRequest("ethereum", "ETH", "1"), T0)
        stamp_before_commit(slow_session)  # the commit's own step, run now: stamped, not committed
        if engine.dialect.name == "postgresql":
            fast = _invoice(engine, app_config, store)  # a later transaction, committed first
            assert isinstance(_match(cache, _transfer(fast.address, 10**18)), Match)
        assert _match(cache, _transfer(slow.address, 10**18)) is None  # not committed: not watched yet
    assert _match(cache, _transfer(slow.address, 10**18)).invoice_id == slow.id  # type: ignore[union-attr]
    assert cache.builds == 1


def test_each_new_invoice_is_matched_on_the_next_get_without_a_rebuild(engine: Engine, app_config: AppConfig) -> None:
    store = _store(engine)
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    first = _invoice(engine, app_config, store)
    assert isinstance(_match(cache, _transfer(first.address, 10**18)), Match)
    assert (cache.builds, cache.refreshes) == (1, 0)
    address = _invoice(engine, app_config, store)
    amount = _invoice(engine, app_config, store, match="amount")  # also the store's new amount address
    matched = [_match(cache, _transfer(inv.address, inv.amount)) for inv in (address, amount)]
    assert [m.invoice_id for m in matched if isinstance(m, Match)] == [address.id, amount.id]
    assert (cache.builds, cache.refreshes) == (1, 1)
    assert isinstance(_match(cache, _transfer(first.address, 10**18)), Match)  # nothing new: no read
    assert (cache.builds, cache.refreshes) == (1, 1)


def test_cancel_and_mark_paid_keep_the_targets_watched(engine: Engine, app_config: AppConfig) -> None:
    """Status changes need no new index: matching routes by deadline and the ledger by status."""
    store = _store(engine)
    cancelled, paid = _invoice(engine, app_config, store), _invoice(engine, app_config, store)
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    cache.get()
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        cancel_invoice(s, ledger, s.get(Invoice, cancelled.id), T0, actor="test")  # type: ignore[arg-type]
        mark_paid(s, ledger, s.get(Invoice, paid.id), T0, actor="test")  # type: ignore[arg-type]
    hits = [_match(cache, _transfer(inv.address, 10**18)) for inv in (cancelled, paid)]
    assert [h.invoice_id for h in hits if isinstance(h, Match)] == [cancelled.id, paid.id]
    assert (cache.builds, cache.refreshes) == (1, 0)


def test_a_released_amount_goes_to_the_invoice_issued_it_next(engine: Engine, app_config: AppConfig) -> None:
    store = _store(engine)
    with session_scope(engine) as s:
        update_store(s, s.get(Store, store.id), T0, actor="test", allow_private_callbacks=False, late_window=0)  # type: ignore[arg-type]
    old = _invoice(engine, app_config, store, match="amount", expires_in=600)
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    assert _match(cache, _transfer(old.address, old.amount)).invoice_id == old.id  # type: ignore[union-attr]
    later = T0 + timedelta(hours=1)
    with session_scope(engine) as s:  # EXPIRED (the chain clock needs a scanned block time past it)
        inv = s.get(Invoice, old.id)
        assert inv is not None
        inv.status, inv.updated_at = "EXPIRED", later
        s.add(inv)
    with session_scope(engine) as s:
        Ledger._release_amounts(s, later)  # the expiry sweep's release step
    released = _match(cache, _transfer(old.address, old.amount, later))
    assert isinstance(released, Unmatched) and released.reason is UnmatchedReason.NO_AMOUNT_MATCH
    with session_scope(engine) as s:
        new = create_invoice(s, app_config, store, InvoiceRequest("ethereum", "ETH", "1", match="amount"), later)
    assert new.amount == old.amount
    assert _match(cache, _transfer(new.address, new.amount, later)).invoice_id == new.id  # type: ignore[union-attr]
    assert cache.builds == 1


def test_a_late_window_change_rebuilds_the_index(engine: Engine, app_config: AppConfig) -> None:
    store = _store(engine)
    inv = _invoice(engine, app_config, store, expires_in=600)
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    late = T0 + timedelta(days=30)
    assert _match(cache, _transfer(inv.address, 10**18, late)).reason is UnmatchedReason.EXPIRED_BEYOND_LATE_WINDOW  # type: ignore[union-attr]
    with session_scope(engine) as s:
        update_store(s, s.get(Store, store.id), T0, actor="t", allow_private_callbacks=False, late_window="60d")  # type: ignore[arg-type]
    with read_scope(engine) as s:
        assert read_versions(s, "ethereum")[1] == 1
        assert read_versions(s, EVERY_NETWORK)[0] == 1
    assert isinstance(_match(cache, _transfer(inv.address, 10**18, late)), Match)
    assert cache.builds == 2


def test_the_deadline_is_the_expiry_plus_the_late_window_to_the_second(engine: Engine, app_config: AppConfig) -> None:
    """The database computes the deadline (floor of the expiry's unix time, plus the late window)."""
    store = _store(engine)
    inv = _invoice(engine, app_config, store)
    expires = T0 + timedelta(hours=1, microseconds=999_999)  # a fraction that rounding would carry
    with session_scope(engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.expires_at = expires
    deadline = int(expires.timestamp()) + store.late_window_seconds
    cache = WatchIndexCache(app_config.networks["ethereum"], engine)
    on_time = _match(cache, _transfer(inv.address, 10**18, datetime.fromtimestamp(deadline, UTC)))
    assert isinstance(on_time, Match)
    after = _match(cache, _transfer(inv.address, 10**18, datetime.fromtimestamp(deadline + 1, UTC)))
    assert isinstance(after, Unmatched) and after.reason is UnmatchedReason.EXPIRED_BEYOND_LATE_WINDOW


def test_building_the_index_takes_no_write_lock(engine: Engine, app_config: AppConfig, db_url: str) -> None:
    """On SQLite another connection can write while a build's read transaction is open."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL readers never block writers")
    store = _store(engine)
    _invoice(engine, app_config, store)
    with read_scope(engine) as s:
        read_versions(s, "ethereum")
        assert s.exec(select(Invoice.id)).all()
        other = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.1, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the reader held the write lock
            other.execute("UPDATE stores SET name = 'renamed'")
            other.execute("COMMIT")
        finally:
            other.close()
