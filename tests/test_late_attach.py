"""Attaching a late transfer (issue 9.9): an admin attach is an explicit decision, so the transfer
counts, flagged ``paid_late``, even when the store does not accept late payments. When it cannot
count, the attach is refused with the reason and the transfer stays in the inbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig
from paywatch.domain.matching import Unmatched, UnmatchedReason
from paywatch.domain.status import (
    Heights,
    InvoiceFacts,
    InvoiceStatus,
    PaymentFacts,
    Policy,
    attach_refusal,
    evaluate,
)
from paywatch.domain.transfer import Transfer, address_key
from paywatch.errors import ConflictError
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice, get_invoice
from paywatch.ledger import Ledger
from paywatch.rescan import rescan_range
from paywatch.store.db import session_scope
from paywatch.store.models import (
    CallbackEvent,
    Invoice,
    NetworkState,
    Payment,
    ScannedBlock,
    Store,
    UnmatchedTransfer,
)
from paywatch.stores import create_store, update_store
from paywatch.unmatched import attach, list_unmatched
from tests.conftest import T0, USDT_TRON
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database)
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401

LATE = T0 + timedelta(hours=2)  # the invoices below expire after one hour


def late_transfer(to: str, amount: int, index: int) -> Transfer:
    return Transfer(
        network="tron",
        tx_hash=f"{index:064x}",
        log_index=0,
        block_number=100 + index,
        block_hash=f"{index:064x}",
        block_time=LATE,
        from_address="TXYZ",
        to_address=to,
        asset_key=address_key(USDT_TRON),
        amount=amount,
        memo="WRONGMEMO",
    )


def setup(engine: Engine, config: AppConfig, amount: int) -> tuple[str, int, Ledger]:
    """An expired memo invoice of 5 USDT and one late transfer of ``amount`` in the inbox."""
    ledger = Ledger(config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        assert store.accept_late_payments is False
        invoice = create_invoice(s, config, store, InvoiceRequest("tron", "USDT", "5", "3600", match="memo"), T0)
        cursor = "0x" + "c8" * 32
        s.add(
            NetworkState(
                network="tron",
                tip_height=200,
                final_height=200,
                cursor_height=200,
                cursor_hash=cursor,
                last_scan_at=LATE,
            )
        )
        # scanned up to a block stamped LATE: expiry is judged by the scanned chain's time
        s.add(ScannedBlock(network="tron", number=200, hash=cursor, parent_hash="0x" + "0" * 64, timestamp=LATE))
        s.flush()
        ledger.expiry_sweep(s, LATE)
        item = Unmatched(late_transfer(invoice.address, amount, 1), UnmatchedReason.UNKNOWN_MEMO)
        ledger.record_unmatched(s, [item], LATE)
        row = s.exec(select(UnmatchedTransfer)).one()
        assert row.id is not None
        return invoice.id, row.id, ledger


def test_attaching_a_late_transfer_credits_it_flagged_paid_late(engine: Engine, app_config: AppConfig) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config, 5_000_000)
    with session_scope(engine) as s:
        assert get_invoice(s, None, invoice_id).status == "EXPIRED"
        attach(s, ledger, transfer_id, invoice_id, LATE, actor="test")
    with session_scope(engine) as s:
        invoice = get_invoice(s, None, invoice_id)
        assert (invoice.status, invoice.amount_paid, invoice.flags) == ("COMPLETED", 5_000_000, ["paid_late"])
        [payment] = s.exec(select(Payment)).all()
        assert payment.late and payment.admitted
        types = [e.type for e in s.exec(select(CallbackEvent).where(CallbackEvent.invoice_id == invoice_id))]
        assert types[-2:] == ["invoice.payment_late", "invoice.completed"]
        assert list_unmatched(s) == []
    with session_scope(engine) as s:  # a later evaluation (the sweep, a confirmation) keeps counting it
        ledger.reevaluate(s, ledger.lock_invoice(s, invoice_id), LATE + timedelta(days=1), reason="again")
        assert get_invoice(s, None, invoice_id).amount_paid == 5_000_000


def test_a_late_partial_attach_counts_toward_the_amount(engine: Engine, app_config: AppConfig) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config, 2_000_000)
    with session_scope(engine) as s:
        attach(s, ledger, transfer_id, invoice_id, LATE, actor="test")
        invoice = get_invoice(s, None, invoice_id)
        assert (invoice.status, invoice.amount_paid, invoice.flags) == ("PARTIALLY_EXPIRED", 2_000_000, ["paid_late"])


def test_attach_to_a_cancelled_invoice_is_refused_and_the_transfer_stays(engine: Engine, app_config: AppConfig) -> None:
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        invoice = create_invoice(s, app_config, store, InvoiceRequest("tron", "USDT", "5", match="memo"), T0)
        cancel_invoice(s, ledger, invoice, T0, actor="test")
        item = Unmatched(late_transfer(invoice.address, 5_000_000, 2), UnmatchedReason.UNKNOWN_MEMO)
        ledger.record_unmatched(s, [item], T0)
        row_id = s.exec(select(UnmatchedTransfer.id)).one()
        invoice_id = invoice.id
    assert row_id is not None
    with session_scope(engine) as s, pytest.raises(ConflictError, match="CANCELLED") as caught:
        attach(s, ledger, row_id, invoice_id, T0, actor="test")
    assert caught.value.field == "invoice"
    with session_scope(engine) as s:
        assert [r.id for r in list_unmatched(s)] == [row_id]
        assert s.exec(select(Payment)).all() == []
        assert (s.get(Invoice, invoice_id) or Invoice()).amount_paid == 0


def test_pure_rule_an_admitted_late_payment_counts_without_accepting_late_payments() -> None:
    invoice = InvoiceFacts(amount=10, asset_key="native", expires_at=T0, confirmations_required=1)
    late = PaymentFacts(key="a", asset_key="native", amount=10, block_number=5, block_time=LATE)
    heights = Heights(tip=10)
    refused = evaluate(invoice, [late], LATE, heights, Policy())
    admitted = evaluate(invoice, [replace(late, admitted=True)], LATE, heights, Policy())
    assert (refused.status, refused.seen) == (InvoiceStatus.EXPIRED, 0)
    assert (admitted.status, admitted.seen, sorted(admitted.flags)) == (InvoiceStatus.COMPLETED, 10, ["paid_late"])
    assert attach_refusal(late, invoice) is None
    cancelled = replace(invoice, status=InvoiceStatus.CANCELLED)
    assert attach_refusal(late, cancelled) == (
        "invoice",
        "the invoice is CANCELLED, so nothing counts toward it; attach it to a replacement invoice",
    )
    assert attach_refusal(replace(late, orphaned=True), invoice) is not None
    assert attach_refusal(replace(late, asset_key="0xother"), invoice) is not None


# --- end to end on anvil: a payment beyond the late window, found by the scanner, then attached ----


@pytest.mark.anvil
def test_a_transfer_beyond_the_late_window_attached_by_an_admin_completes_the_invoice(
    h: Harness, deployed: Deployed
) -> None:
    with session_scope(h.engine) as s:
        store = s.get(Store, h.store.id)
        assert store is not None
        update_store(s, store, h.clock(), actor="test", allow_private_callbacks=False, late_window="0")
    inv = h.invoice("USDT", "5", expires_in=60)
    h.chain.next_timestamp(inv.expires_at + timedelta(minutes=5))
    h.chain.token_transfer(deployed.usdt, inv.address, 5 * 10**6)
    h.scan()
    [row] = h.unmatched()
    assert (row.reason, row.hint_invoice_id) == ("expired_beyond_late_window", inv.id)
    with session_scope(h.engine) as s:
        h.ledger.expiry_sweep(s, h.clock())
        assert row.id is not None
        attach(s, h.ledger, row.id, inv.id, h.clock(), actor="admin")
    h.chain.mine(3)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 5 * 10**6, ["paid_late"])
    first_block = h.payments(inv.id)[0].block_number
    rescan_range(h.engine, h.network, h.adapter, h.ledger, start=first_block, clock=h.clock)
    assert len(h.payments(inv.id)) == 1 and h.get(inv.id).amount_paid == 5 * 10**6  # never twice
