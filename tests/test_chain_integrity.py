"""Chain integrity on anvil: rescans never credit above the cursor, a payment counts only while its
block is the stored canonical one, a re-mined transfer is the same transfer, and a re-mined
payment of a COMPLETED invoice is restored with a callback."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import col, select

from paywatch.domain.matching import Match
from paywatch.errors import ConflictError, InputError, RetryableChainError
from paywatch.rescan import rescan_range, rescan_transaction
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from paywatch.unmatched import attach
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401

pytestmark = pytest.mark.anvil

ETH = 10**18
USDT = 10**6


def _events(h: Harness, invoice_id: str) -> list[CallbackEvent]:
    with session_scope(h.engine) as s:
        query = select(CallbackEvent).where(CallbackEvent.invoice_id == invoice_id).order_by(col(CallbackEvent.id))
        return list(s.exec(query))


def test_a_rescan_ahead_of_the_cursor_cannot_credit_a_transaction_a_reorg_drops(h: Harness) -> None:
    chain = h.chain
    inv = h.invoice("ETH", "1")
    cursor = h.state().cursor_height
    assert cursor is not None
    raw, _ = chain.signed_eth(inv.address, ETH, chain.nonce(chain.accounts[0]))
    chain.send_raw(raw)  # block cursor + 1, which the scanner has not reached
    chain.mine(3)
    report = rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor, clock=h.clock)  # end: default
    chain.reorg(4)  # every block above the cursor is replaced; the transaction is dropped
    chain.mine(1)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid) == ("PENDING", 0)
    assert all(p.orphaned for p in h.payments(inv.id))
    assert report.end == cursor  # the default end is the cursor, not the tip


def test_a_rescan_refuses_blocks_the_scanner_has_not_reached(h: Harness, deployed: Deployed) -> None:
    inv = h.invoice("USDT", "2")
    cursor = h.state().cursor_height
    assert cursor is not None
    tx = h.chain.token_transfer(deployed.usdt, inv.address, 1 * USDT)
    with pytest.raises(InputError, match="cursor") as above:
        rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor + 1, clock=h.clock)
    assert above.value.field == "from_block"
    with pytest.raises(InputError, match="cursor") as beyond:
        rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor, end=cursor + 1, clock=h.clock)
    assert beyond.value.field == "to_block"
    with pytest.raises(ConflictError, match="cursor"):
        rescan_transaction(h.engine, h.network, h.adapter, h.ledger, tx, clock=h.clock)
    assert h.payments() == []
    h.scan()  # the scanner credits it when it gets there, once
    assert len(h.payments(inv.id)) == 1 and h.get(inv.id).status == "PARTIAL"
    again = rescan_transaction(h.engine, h.network, h.adapter, h.ledger, tx, clock=h.clock)
    assert [p.change for p in again.payments] == ["unchanged"] and len(h.payments(inv.id)) == 1


@pytest.mark.parametrize("via", ["rescan", "scanner"])
def test_a_token_transfer_remined_at_another_log_index_is_credited_once(
    h: Harness, deployed: Deployed, via: str
) -> None:
    chain = h.chain
    inv = h.invoice("USDT", "5")
    cursor = h.state().cursor_height
    assert cursor is not None
    nonce = chain.nonce(chain.accounts[0])
    filler, _ = chain.signed_token_transfer(deployed.usdt, chain.accounts[2], 1 * USDT, nonce)
    raw, tx = chain.signed_token_transfer(deployed.usdt, inv.address, 5 * USDT, nonce + 1)
    chain.send_raw(filler)
    chain.send_raw(raw)  # alone in its block: log index 0
    chain.mine(1)
    if via == "rescan":
        rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor, clock=h.clock)
    else:
        h.scan()
    chain.reorg(3, [(filler, 0), (raw, 0)])  # both in one block now: the payment's log is index 1
    chain.mine(3)
    h.scan()
    receipt = chain.node.rpc("eth_getTransactionReceipt", tx)
    assert [int(log["logIndex"], 16) for log in receipt["logs"]] == [1]
    [payment] = h.payments(inv.id)  # the same transfer keeps its one row
    assert (payment.tx_hash, payment.orphaned, payment.block_hash) == (tx, False, receipt["blockHash"])
    assert (payment.log_index, payment.tx_position) == (1, 0)
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 5 * USDT, [])


def test_the_scanner_orphans_a_payment_whose_block_it_stores_with_another_hash(h: Harness) -> None:
    """Payments stored above the cursor (as rescans of earlier versions did) are checked when the
    scanner stores their height: a payment counts only while its block is the canonical one."""
    chain = h.chain
    inv = h.invoice("ETH", "1")
    cursor = h.state().cursor_height
    assert cursor is not None
    raw, _ = chain.signed_eth(inv.address, ETH, chain.nonce(chain.accounts[0]))
    chain.send_raw(raw)
    chain.mine(3)
    ahead = h.adapter.fetch_range(cursor + 1, cursor + 1, lambda _a: True)
    with session_scope(h.engine) as s:
        h.ledger.record_matches(s, [Match(t, inv.id) for t in ahead.transfers], h.clock())
    assert h.get(inv.id).amount_paid == ETH
    chain.reorg(4)
    chain.mine(1)
    h.scan()
    [payment] = h.payments(inv.id)
    got = h.get(inv.id)
    assert payment.orphaned and (got.status, got.amount_paid, got.flags) == ("PENDING", 0, ["reverted"])
    assert _events(h, inv.id)[-1].type == "invoice.payment_reverted"


def test_a_completed_payment_reorged_out_then_remined_is_restored_with_a_callback(h: Harness) -> None:
    chain = h.chain
    inv = h.invoice("ETH", "1")
    raw, _ = chain.signed_eth(inv.address, ETH, chain.nonce(chain.accounts[0]))
    chain.send_raw(raw)
    chain.mine(2)  # 3 confirmations
    h.scan()
    assert h.get(inv.id).status == "COMPLETED"

    chain.reorg(3)  # the payment's block is replaced; the transaction is not in the new blocks
    chain.mine(1)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 0, ["reverted"])
    assert _events(h, inv.id)[-1].type == "invoice.payment_reverted"

    chain.send_raw(raw)  # re-mined
    chain.mine(2)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", ETH, [])
    events = _events(h, inv.id)
    assert [e.type for e in events].count("invoice.payment_restored") == 1
    last = events[-1]
    assert last.type == "invoice.payment_restored" and last.status_version == got.status_version
    assert [e.status_version for e in events] == list(range(1, len(events) + 1))
    data = json.loads(last.body)["data"]
    assert (data["status"], data["flags"], data["amount_paid"]) == ("COMPLETED", [], "1")


def test_nothing_expires_while_the_scanner_lags_behind_an_on_time_payment(h: Harness) -> None:
    chain = h.chain
    paid = h.invoice("ETH", "1", expires_in=600)
    unpaid = h.invoice("ETH", "1", expires_in=600)
    chain.send_eth(paid.address, ETH)  # mined now: on time by block time
    chain.mine(2)
    wall = paid.expires_at + timedelta(hours=1)  # the wall clock is past the expiry; the scan is not
    with session_scope(h.engine) as s:
        assert h.ledger.expiry_sweep(s, wall) == 0
    assert (h.get(paid.id).status, h.get(unpaid.id).status) == ("PENDING", "PENDING")

    h.scan()  # the scanner catches up and finds the payment made in time
    assert h.get(paid.id).status == "COMPLETED"
    with session_scope(h.engine) as s:
        assert h.ledger.expiry_sweep(s, wall) == 0  # the scanned blocks are all before the expiry
    assert h.get(unpaid.id).status == "PENDING"

    chain.next_timestamp(unpaid.expires_at)  # a block at the expiry, scanned: now the window is closed
    chain.mine(1)
    h.scan()
    with session_scope(h.engine) as s:
        assert h.ledger.expiry_sweep(s, wall) == 1
    assert h.get(unpaid.id).status == "EXPIRED"
    assert "invoice.expired" not in [e.type for e in _events(h, paid.id)]


def test_a_rescan_of_blocks_a_reorg_replaced_waits_for_the_scanner(h: Harness) -> None:
    chain = h.chain
    inv = h.invoice("ETH", "1")
    raw, _ = chain.signed_eth(inv.address, ETH, chain.nonce(chain.accounts[0]))
    chain.mine(2)
    h.scan()
    cursor = h.state().cursor_height
    assert cursor is not None
    chain.reorg(2, [(raw, 0)])  # the scanner's last two blocks are replaced; one now pays the invoice
    with pytest.raises(RetryableChainError, match="changed since the scanner stored it"):
        rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor - 1, clock=h.clock)
    assert h.payments() == []
    chain.mine(1)
    h.scan()  # the scanner processes the reorg and credits the payment
    assert h.get(inv.id).amount_paid == ETH
    again = rescan_range(h.engine, h.network, h.adapter, h.ledger, start=cursor - 1, clock=h.clock)
    assert not again.changed and len(h.payments(inv.id)) == 1


def test_an_attached_transfer_reorged_out_and_remined_stays_credited_to_its_invoice(h: Harness) -> None:
    chain = h.chain
    inv = h.invoice("ETH", "1", match="amount")  # the shared deposit address, a unique amount
    raw, tx = chain.signed_eth(inv.address, ETH // 2, chain.nonce(chain.accounts[0]))  # not the amount
    chain.send_raw(raw)
    chain.mine(1)
    h.scan()
    [row] = h.unmatched()
    assert (row.tx_hash, row.reason) == (tx, "no_amount_match")
    with session_scope(h.engine) as s:
        assert row.id is not None
        attach(s, h.ledger, row.id, inv.id, h.clock(), actor="admin")
    assert (h.get(inv.id).status, h.get(inv.id).amount_paid) == ("PARTIAL", ETH // 2)

    chain.reorg(2, [(raw, 1)])  # re-mined one block later
    chain.mine(1)
    h.scan()
    [payment] = h.payments(inv.id)
    [row] = h.unmatched()
    assert not payment.orphaned and payment.block_hash == row.block_hash and not row.orphaned
    assert row.attached_invoice_id == inv.id
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("PARTIAL", ETH // 2, [])
    assert [e.type for e in _events(h, inv.id)][-3:] == [
        "invoice.payment_reverted",  # back to PENDING
        "invoice.payment_restored",
        "invoice.partial",
    ]
