"""Ledger: idempotent payments, reorgs, confirmations, expiry; history and outbox written with each change."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from paywatch.config import AppConfig
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason
from paywatch.domain.transfer import Transfer, address_key
from paywatch.invoices import InvoiceRequest, create_invoice, mark_paid
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.store.models import (
    CallbackEvent,
    Invoice,
    NetworkState,
    Payment,
    StatusHistory,
    Store,
    UnmatchedTransfer,
)
from paywatch.stores import create_store
from tests.conftest import T0, USDT_ETH
from tests.support.chain_clock import scanned_until
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)

EXPIRES = T0 + timedelta(hours=1)
NOW = T0 + timedelta(minutes=20)


class Fixture:
    """One store, one USDT invoice on ethereum (3 confirmations), and helpers around them."""

    def __init__(self, engine: Engine, config: AppConfig) -> None:
        self.engine = engine
        self.ledger = Ledger(config.networks)
        with session_scope(engine) as s:
            store = create_store(s, "shop", T0).store
            inv = create_invoice(s, config, store, InvoiceRequest("ethereum", "USDT", "25.5", "01:00"), T0)
            self.invoice_id, self.address, self.store_id = inv.id, inv.address, store.id

    def scanned(self, when: datetime) -> None:
        """The scanner has reached a block stamped ``when`` (expiry is judged by scanned block time)."""
        scanned_until(self.engine, "ethereum", when)

    def tip(self, height: int) -> None:
        with session_scope(self.engine) as s:
            state = s.get(NetworkState, "ethereum") or NetworkState(network="ethereum")
            state.tip_height = height
            s.add(state)

    def transfer(
        self, amount: int = 25_500_000, *, tx: int = 1, block: int = 10, fork: str = "a", **kw: object
    ) -> Transfer:
        t = Transfer(
            network="ethereum",
            tx_hash=f"0x{tx:064x}",
            log_index=7,
            block_number=block,
            block_hash=f"0x{fork}{block:063x}",
            block_time=T0 + timedelta(minutes=block),
            from_address="0x" + "11" * 20,
            to_address=self.address,
            asset_key=address_key(USDT_ETH),
            amount=amount,
        )
        return replace(t, **kw)  # type: ignore[arg-type]

    def record(self, *transfers: Transfer, now: datetime = NOW) -> set[str]:
        with session_scope(self.engine) as s:
            return self.ledger.record_matches(s, [Match(t, self.invoice_id) for t in transfers], now)

    def invoice(self) -> Invoice:
        with Session(self.engine) as s:
            inv = s.get(Invoice, self.invoice_id)
            assert inv is not None
            return inv

    def events(self) -> list[CallbackEvent]:
        with Session(self.engine) as s:
            query = select(CallbackEvent).where(CallbackEvent.invoice_id == self.invoice_id)
            return list(s.exec(query.order_by(col(CallbackEvent.id))))

    def event_types(self) -> list[str]:
        return [e.type for e in self.events()]

    def history(self) -> list[StatusHistory]:
        with Session(self.engine) as s:
            query = select(StatusHistory).where(StatusHistory.invoice_id == self.invoice_id)
            return list(s.exec(query.order_by(col(StatusHistory.id))))

    def payments(self) -> list[Payment]:
        with Session(self.engine) as s:
            return list(s.exec(select(Payment).where(Payment.invoice_id == self.invoice_id)))


@pytest.fixture
def fx(engine: Engine, app_config: AppConfig) -> Fixture:
    f = Fixture(engine, app_config)
    f.tip(11)  # block 10 has 2 of 3 confirmations
    return f


def assert_versions_consistent(fx: Fixture) -> None:
    """status_version strictly increases across events; history rows carry the version of their change."""
    events = fx.events()
    versions = [e.status_version for e in events]
    assert versions == sorted(set(versions)) == list(range(1, len(versions) + 1))
    for e in events:
        assert json.loads(e.body)["data"]["status_version"] == e.status_version
        assert json.loads(e.body)["type"] == e.type
    history_versions = [h.status_version for h in fx.history()]
    assert history_versions == sorted(set(history_versions))
    assert fx.invoice().status_version == versions[-1]
    assert history_versions[-1] <= versions[-1]


def test_payment_moves_to_waiting_then_completed(fx: Fixture) -> None:
    assert fx.record(fx.transfer()) == {fx.invoice_id}
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid, inv.amount_confirmed) == ("WAITING_FOR_CONFIRMATIONS", 25_500_000, 0)
    fx.tip(12)
    with session_scope(fx.engine) as s:
        assert fx.ledger.refresh_confirmations(s, "ethereum", NOW) == 1
    inv = fx.invoice()
    assert (inv.status, inv.amount_confirmed) == ("COMPLETED", 25_500_000)
    assert fx.event_types() == [
        "invoice.created",
        "invoice.payment_received",
        "invoice.waiting_for_confirmations",
        "invoice.completed",
    ]
    assert [h.status for h in fx.history()] == ["PENDING", "WAITING_FOR_CONFIRMATIONS", "COMPLETED"]
    assert_versions_consistent(fx)
    with session_scope(fx.engine) as s:  # nothing left to do
        assert fx.ledger.refresh_confirmations(s, "ethereum", NOW) == 0


def test_record_matches_is_idempotent(fx: Fixture) -> None:
    t = fx.transfer(10_000_000)
    assert fx.record(t, t) == {fx.invoice_id}  # twice in one batch
    assert fx.record(t) == set()  # and again in a later scan
    assert fx.record(replace(t, from_address="0x" + "99" * 20)) == set()  # same (tx, log index) is the same transfer
    assert len(fx.payments()) == 1
    assert fx.event_types() == ["invoice.created", "invoice.payment_received", "invoice.partial"]
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid) == ("PARTIAL", 10_000_000)
    assert len(fx.history()) == 2
    assert_versions_consistent(fx)


def test_two_log_indexes_of_one_tx_are_two_payments(fx: Fixture) -> None:
    fx.record(fx.transfer(10_000_000), fx.transfer(15_500_000, log_index=8))
    assert len(fx.payments()) == 2
    assert fx.invoice().amount_paid == 25_500_000
    assert fx.event_types().count("invoice.payment_received") == 2


def test_reorg_moves_status_back_and_emits_reverted(fx: Fixture) -> None:
    fx.record(fx.transfer(block=10))
    assert fx.invoice().status == "WAITING_FOR_CONFIRMATIONS"
    with session_scope(fx.engine) as s:
        assert fx.ledger.orphan_from(s, "ethereum", 10, NOW) == {fx.invoice_id}
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid, inv.flags) == ("PENDING", 0, ["reverted"])
    assert [p.orphaned for p in fx.payments()] == [True]
    assert fx.event_types()[-1] == "invoice.payment_reverted"
    assert [h.status for h in fx.history()] == ["PENDING", "WAITING_FOR_CONFIRMATIONS", "PENDING"]
    assert_versions_consistent(fx)
    with session_scope(fx.engine) as s:  # orphaning again changes nothing
        assert fx.ledger.orphan_from(s, "ethereum", 10, NOW) == set()
    assert fx.event_types()[-1] == "invoice.payment_reverted"


def test_orphan_from_leaves_lower_blocks_alone(fx: Fixture) -> None:
    fx.record(fx.transfer(10_000_000, tx=1, block=9), fx.transfer(15_500_000, tx=2, block=10))
    with session_scope(fx.engine) as s:
        fx.ledger.orphan_from(s, "ethereum", 10, NOW)
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid) == ("PARTIAL", 10_000_000)
    assert fx.event_types()[-2:] == ["invoice.payment_reverted", "invoice.partial"]


def test_remined_in_another_block_is_credited_once(fx: Fixture) -> None:
    fx.record(fx.transfer(block=10, fork="a"))
    with session_scope(fx.engine) as s:
        fx.ledger.orphan_from(s, "ethereum", 10, NOW)
    fx.tip(20)
    fx.record(fx.transfer(block=12, fork="b"))
    payments = fx.payments()
    assert len(payments) == 1
    assert (payments[0].orphaned, payments[0].block_number) == (False, 12)
    assert payments[0].block_hash.startswith("0xb")
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid, inv.amount_confirmed) == ("COMPLETED", 25_500_000, 25_500_000)
    assert "overpaid" not in inv.flags
    assert fx.event_types().count("invoice.payment_received") == 1  # the re-mined copy is not a new payment
    assert_versions_consistent(fx)


def test_remined_without_explicit_orphaning_moves_the_payment(fx: Fixture) -> None:
    fx.record(fx.transfer(block=10, fork="a"))
    fx.record(fx.transfer(block=11, fork="b"))
    payments = fx.payments()
    assert len(payments) == 1 and payments[0].block_number == 11
    assert fx.invoice().amount_paid == 25_500_000


def test_reorg_of_completed_keeps_completed_sets_reverted(fx: Fixture) -> None:
    fx.tip(100)
    fx.record(fx.transfer(block=10))
    assert fx.invoice().status == "COMPLETED"
    with session_scope(fx.engine) as s:
        fx.ledger.orphan_from(s, "ethereum", 10, NOW)
    inv = fx.invoice()
    assert inv.status == "COMPLETED"
    assert "reverted" in inv.flags
    assert fx.event_types()[-1] == "invoice.payment_reverted"
    assert [h.status for h in fx.history()][-1] == "COMPLETED"
    assert_versions_consistent(fx)


def test_history_and_outbox_commit_with_the_change_or_not_at_all(fx: Fixture) -> None:
    before = (len(fx.events()), len(fx.history()))
    with pytest.raises(RuntimeError), session_scope(fx.engine) as s:
        fx.ledger.record_matches(s, [Match(fx.transfer(), fx.invoice_id)], NOW)
        s.flush()
        raise RuntimeError("crash after recording, before commit")
    assert (len(fx.events()), len(fx.history())) == before
    assert fx.payments() == []
    assert fx.invoice().status == "PENDING"
    fx.record(fx.transfer())  # the retry then records it once
    assert len(fx.payments()) == 1


def test_expiry_sweep_makes_pending_expired_and_history_shows_both(fx: Fixture) -> None:
    fx.scanned(EXPIRES + timedelta(hours=2))
    with session_scope(fx.engine) as s:
        assert fx.ledger.expiry_sweep(s, EXPIRES - timedelta(seconds=1)) == 0
    assert fx.invoice().status == "PENDING"
    with session_scope(fx.engine) as s:
        assert fx.ledger.expiry_sweep(s, EXPIRES + timedelta(seconds=1)) == 1
    assert fx.invoice().status == "EXPIRED"
    history = fx.history()
    assert [h.status for h in history] == ["PENDING", "EXPIRED"]
    assert history[1].at == EXPIRES + timedelta(seconds=1)
    assert fx.event_types() == ["invoice.created", "invoice.expired"]
    assert_versions_consistent(fx)
    with session_scope(fx.engine) as s:  # already swept
        assert fx.ledger.expiry_sweep(s, EXPIRES + timedelta(hours=1)) == 0


def test_nothing_expires_while_the_scan_lags_and_on_time_payments_found_late_count(fx: Fixture) -> None:
    """The merchant never hears invoice.expired before a payment that was on time by block time."""
    fx.scanned(EXPIRES - timedelta(minutes=5))  # the scanner's last block is before the expiry
    wall = EXPIRES + timedelta(hours=2)
    with session_scope(fx.engine) as s:
        assert fx.ledger.expiry_sweep(s, wall) == 0
    assert fx.invoice().status == "PENDING"
    fx.record(fx.transfer(1_000_000, tx=1, block=40), now=wall)  # mined at T0 + 40 min: on time
    assert fx.invoice().status == "PARTIAL"
    fx.record(fx.transfer(24_500_000, tx=2, block=50), now=wall)
    assert fx.invoice().status == "WAITING_FOR_CONFIRMATIONS"
    assert not {"invoice.expired", "invoice.partially_expired"} & set(fx.event_types())
    assert_versions_consistent(fx)


def test_expiry_sweep_partial_becomes_partially_expired_but_waiting_does_not_expire(
    engine: Engine, app_config: AppConfig
) -> None:
    partial, waiting = Fixture(engine, app_config), Fixture(engine, app_config)
    partial.tip(11)
    partial.record(partial.transfer(1_000_000, tx=1))
    waiting.record(waiting.transfer(tx=2))
    partial.scanned(EXPIRES + timedelta(days=2))
    with session_scope(engine) as s:
        assert Ledger(app_config.networks).expiry_sweep(s, EXPIRES + timedelta(days=2)) == 1
    assert partial.invoice().status == "PARTIALLY_EXPIRED"
    assert waiting.invoice().status == "WAITING_FOR_CONFIRMATIONS"


def test_late_payment_flagged_reported_not_counted(fx: Fixture) -> None:
    fx.scanned(EXPIRES + timedelta(minutes=1))
    with session_scope(fx.engine) as s:
        fx.ledger.expiry_sweep(s, EXPIRES + timedelta(minutes=1))
    late = fx.transfer(block=70)  # block time T0 + 70 min > expiry
    fx.record(late, now=EXPIRES + timedelta(minutes=80))
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid) == ("EXPIRED", 0)
    assert "paid_late" in inv.flags
    assert fx.payments()[0].late is True
    assert fx.event_types()[-1] == "invoice.payment_late"
    assert_versions_consistent(fx)


def test_late_payment_counts_when_store_accepts(fx: Fixture) -> None:
    with session_scope(fx.engine) as s:
        store = s.get(Store, fx.store_id)
        assert store is not None
        store.accept_late_payments = True
        s.add(store)
    fx.tip(100)
    fx.record(fx.transfer(block=70), now=EXPIRES + timedelta(minutes=80))
    inv = fx.invoice()
    assert (inv.status, inv.flags) == ("COMPLETED", ["paid_late"])
    assert fx.event_types()[-2:] == ["invoice.payment_late", "invoice.completed"]


def test_mark_paid_is_terminal_and_versioned(fx: Fixture, app_config: AppConfig) -> None:
    with session_scope(fx.engine) as s:
        inv = s.get(Invoice, fx.invoice_id)
        assert inv is not None
        mark_paid(s, fx.ledger, inv, NOW, actor="admin")
    fx.record(fx.transfer(1))
    inv = fx.invoice()
    assert inv.status == "COMPLETED" and "marked_paid" in inv.flags
    assert fx.event_types() == ["invoice.created", "invoice.completed", "invoice.payment_received"]
    assert_versions_consistent(fx)


def test_remined_payment_of_another_invoice_reevaluates_its_owner(engine: Engine, app_config: AppConfig) -> None:
    """A re-mined transfer updates the payment row it already has; that row's invoice is the one to re-evaluate."""
    owner, other = Fixture(engine, app_config), Fixture(engine, app_config)
    owner.tip(100)
    t = owner.transfer(block=10)
    owner.record(t)
    with session_scope(engine) as s:
        owner.ledger.orphan_from(s, "ethereum", 10, NOW)
    assert owner.invoice().amount_paid == 0
    with session_scope(engine) as s:  # the scanner now attributes the re-mined copy elsewhere
        touched = owner.ledger.record_matches(
            s, [Match(replace(t, block_number=11, block_hash="0xb1"), other.invoice_id)], NOW
        )
    assert owner.invoice_id in touched
    assert owner.invoice().amount_paid == 25_500_000
    assert other.invoice().amount_paid == 0


def test_finality_network_waits_for_the_solidified_height(engine: Engine, app_config: AppConfig) -> None:
    """Tron relies on solidified blocks only (confirmations_required 0): depth alone never confirms."""
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        inv = create_invoice(s, app_config, store, InvoiceRequest("tron", "USDT", "10", "01:00"), T0)
        inv_id, address = inv.id, inv.address
        assert inv.confirmations_required == 0
        s.add(NetworkState(network="tron", tip_height=1_000, final_height=None))
    t = Transfer(
        network="tron",
        tx_hash="ab" * 32,
        log_index=0,
        block_number=100,
        block_hash="00" * 32,
        block_time=T0 + timedelta(minutes=1),
        from_address="TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK",
        to_address=address,
        asset_key=app_config.networks["tron"].assets["USDT"].contract or "",
        amount=10_000_000,
    )
    with session_scope(engine) as s:
        ledger.record_matches(s, [Match(t, inv_id)], NOW)
    for final, expected in ((None, "WAITING_FOR_CONFIRMATIONS"), (99, "WAITING_FOR_CONFIRMATIONS"), (100, "COMPLETED")):
        with session_scope(engine) as s:
            state = s.get(NetworkState, "tron")
            assert state is not None
            state.final_height = final
            s.add(state)
            ledger.refresh_confirmations(s, "tron", NOW)
            row = s.get(Invoice, inv_id)
            assert row is not None and row.status == expected, final


def test_record_unmatched_is_idempotent_and_orphaned_by_reorg(fx: Fixture) -> None:
    stray = fx.transfer(5, tx=9, block=12, to_address="0x" + "44" * 20)
    item = Unmatched(stray, UnmatchedReason.NO_AMOUNT_MATCH)
    with session_scope(fx.engine) as s:
        assert fx.ledger.record_unmatched(s, [item, item], NOW) == 1
    with session_scope(fx.engine) as s:
        assert fx.ledger.record_unmatched(s, [item], NOW) == 0
    with session_scope(fx.engine) as s:
        fx.ledger.orphan_from(s, "ethereum", 12, NOW)
    with Session(fx.engine) as s:
        rows = s.exec(select(UnmatchedTransfer)).all()
        assert len(rows) == 1 and rows[0].orphaned and rows[0].reason == "no_amount_match"
    with session_scope(fx.engine) as s:  # re-mined elsewhere: revived, still one row
        assert (
            fx.ledger.record_unmatched(
                s, [Unmatched(replace(stray, block_number=13, block_hash="0xb13"), item.reason)], NOW
            )
            == 1
        )
    with Session(fx.engine) as s:
        rows = s.exec(select(UnmatchedTransfer)).all()
        assert len(rows) == 1 and not rows[0].orphaned and rows[0].block_number == 13


def test_flag_only_change_sends_an_event(fx: Fixture) -> None:
    """overpaid added after COMPLETED moved status_version and wrote history, but no outbox row."""
    fx.tip(100)
    fx.record(fx.transfer(block=10))
    assert fx.invoice().status == "COMPLETED"
    fx.tip(51)
    fx.record(fx.transfer(1_000_000, tx=2, block=50))  # seen, not yet confirmed: no flag yet
    assert fx.invoice().flags == []
    fx.tip(52)
    with session_scope(fx.engine) as s:
        assert fx.ledger.refresh_confirmations(s, "ethereum", NOW) == 1
    inv = fx.invoice()
    assert (inv.status, inv.flags) == ("COMPLETED", ["overpaid"])
    last = fx.events()[-1]
    assert last.type == "invoice.updated"
    assert json.loads(last.body)["data"]["flags"] == ["overpaid"]
    assert_versions_consistent(fx)
    assert fx.history()[-1].status_version == last.status_version


def test_payment_to_cancelled_invoice_goes_to_the_inbox_and_can_be_attached(fx: Fixture, app_config: AppConfig) -> None:
    """A late payment to a CANCELLED invoice was credited to it and could not be moved."""
    from paywatch.invoices import cancel_invoice
    from paywatch.unmatched import attach

    with session_scope(fx.engine) as s:
        inv = s.get(Invoice, fx.invoice_id)
        assert inv is not None
        cancel_invoice(s, fx.ledger, inv, NOW, actor="admin")
    events_before = fx.event_types()
    fx.record(fx.transfer())
    inv = fx.invoice()
    assert (inv.status, inv.amount_paid, inv.flags) == ("CANCELLED", 0, [])
    assert fx.payments() == []
    assert fx.event_types() == events_before
    with Session(fx.engine) as s:
        (row,) = s.exec(select(UnmatchedTransfer)).all()
        assert (row.reason, row.hint_invoice_id, row.amount) == ("invoice_cancelled", fx.invoice_id, 25_500_000)
        row_id = row.id
    fx.record(fx.transfer())  # the next scan of the same transfer changes nothing
    with Session(fx.engine) as s:
        assert len(s.exec(select(UnmatchedTransfer)).all()) == 1
    with session_scope(fx.engine) as s:
        store = s.get(Store, fx.store_id)
        assert store is not None
        replacement = create_invoice(s, app_config, store, InvoiceRequest("ethereum", "USDT", "25.5", "01:00"), NOW)
        replacement_id = replacement.id
    with session_scope(fx.engine) as s:
        assert row_id is not None
        attach(s, fx.ledger, row_id, replacement_id, NOW, actor="admin")
    with Session(fx.engine) as s:
        moved = s.get(Invoice, replacement_id)
        assert moved is not None and (moved.status, moved.amount_paid) == ("WAITING_FOR_CONFIRMATIONS", 25_500_000)
