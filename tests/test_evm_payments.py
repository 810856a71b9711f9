"""Deposits on a real anvil node, through the real scanner and the real database."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlmodel import col, select

from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, Invoice
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401

pytestmark = pytest.mark.anvil

ETH = 10**18
USDT = 10**6


def test_exact_payment_in_eth_and_token(h: Harness, deployed: Deployed) -> None:
    eth_inv = h.invoice("ETH", "1.5")
    usdt_inv = h.invoice("USDT", "25")
    h.chain.send_eth(eth_inv.address, 15 * ETH // 10)
    h.chain.token_transfer(deployed.usdt, usdt_inv.address, 25 * USDT)
    h.scan()
    assert h.get(eth_inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    assert h.get(usdt_inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    h.chain.mine(2)  # confirmations: 3, counting the payment's own block
    h.scan()
    for inv, amount in ((eth_inv, 15 * ETH // 10), (usdt_inv, 25 * USDT)):
        got = h.get(inv.id)
        assert (got.status, got.flags, got.amount_paid, got.amount_confirmed) == ("COMPLETED", [], amount, amount)
    [eth_pay] = h.payments(eth_inv.id)
    [tok_pay] = h.payments(usdt_inv.id)
    assert (eth_pay.asset_key, eth_pay.log_index, eth_pay.from_address) == ("native", -1, h.chain.payer.lower())
    assert tok_pay.asset_key == deployed.usdt and tok_pay.log_index >= 0
    with session_scope(h.engine) as s:
        types = s.exec(
            select(CallbackEvent.type).where(CallbackEvent.invoice_id == eth_inv.id).order_by(col(CallbackEvent.id))
        ).all()
    assert types == [
        "invoice.created",
        "invoice.payment_received",
        "invoice.waiting_for_confirmations",
        "invoice.completed",
    ]
    h.scan()  # idempotent: nothing new, nothing twice
    assert len(h.payments()) == 2


def test_partial_then_top_up(h: Harness, deployed: Deployed) -> None:
    inv = h.invoice("USDT", "10")
    h.chain.token_transfer(deployed.usdt, inv.address, 4 * USDT)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid) == ("PARTIAL", 4 * USDT)
    h.chain.token_transfer(deployed.usdt, inv.address, 6 * USDT)
    h.chain.mine(3)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 10 * USDT, [])
    assert len(h.payments(inv.id)) == 2


def test_overpayment(h: Harness) -> None:
    inv = h.invoice("ETH", "0.1")
    h.chain.send_eth(inv.address, ETH // 4)
    h.chain.mine(3)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.flags, got.amount_paid) == ("COMPLETED", ["overpaid"], ETH // 4)


def test_late_payment_judged_by_block_time(h: Harness, deployed: Deployed) -> None:
    inv = h.invoice("USDT", "5", expires_in=60)
    on_time = h.invoice("USDT", "5", expires_in=60)
    # The watcher lags: it scans long after expiry, but this block is inside the window.
    h.chain.next_timestamp(on_time.expires_at - timedelta(seconds=5))
    h.chain.token_transfer(deployed.usdt, on_time.address, 5 * USDT)
    h.chain.next_timestamp(inv.expires_at + timedelta(seconds=30))
    h.chain.token_transfer(deployed.usdt, inv.address, 5 * USDT)
    h.chain.mine(3)
    h.scan()
    late = h.get(inv.id)
    assert late.status == "EXPIRED" and "paid_late" in late.flags
    [payment] = h.payments(inv.id)
    assert payment.late and payment.block_time > inv.expires_at
    assert h.get(on_time.id).status == "COMPLETED"
    with session_scope(h.engine) as s:
        events = s.exec(select(CallbackEvent.type).where(CallbackEvent.invoice_id == inv.id)).all()
    assert "invoice.payment_late" in events


def test_two_invoices_paid_in_the_same_block(h: Harness, deployed: Deployed) -> None:
    a = h.invoice("ETH", "0.2")
    b = h.invoice("USDT", "7")
    h.chain.automine(False)
    tx_a = h.chain.send_eth(a.address, 2 * ETH // 10, wait=False)
    tx_b = h.chain.token_transfer(deployed.usdt, b.address, 7 * USDT, gas=100_000, wait=False)
    h.chain.mine(1)
    h.chain.automine(True)
    h.scan()
    [pa], [pb] = h.payments(a.id), h.payments(b.id)
    assert pa.block_number == pb.block_number
    assert (pa.tx_hash, pb.tx_hash) == (tx_a, tx_b)
    assert h.get(a.id).status == h.get(b.id).status == "WAITING_FOR_CONFIRMATIONS"


def test_unique_amount_strategy_and_unmatched_inbox(h: Harness, deployed: Deployed) -> None:
    a = h.invoice("USDT", "20", match="amount")
    b = h.invoice("USDT", "20", match="amount")
    assert a.address == b.address and a.amount != b.amount
    h.chain.token_transfer(deployed.usdt, b.address, b.amount)
    h.chain.token_transfer(deployed.usdt, a.address, a.amount)
    h.chain.token_transfer(deployed.usdt, a.address, 20 * USDT + 999)  # no invoice expects this
    h.chain.mine(3)
    h.scan()
    assert [p.amount for p in h.payments(a.id)] == [a.amount]
    assert [p.amount for p in h.payments(b.id)] == [b.amount]
    assert h.get(a.id).status == h.get(b.id).status == "COMPLETED"
    [stray] = h.unmatched()
    assert (stray.amount, stray.reason, stray.to_address) == (20 * USDT + 999, "no_amount_match", a.address.lower())


@pytest.mark.slow
def test_a_thousand_watched_addresses(h: Harness, deployed: Deployed) -> None:
    invoices = h.invoices([("USDT" if i % 2 else "ETH", "1") for i in range(1000)])
    rng = random.Random(7)
    paid = [invoices[0], invoices[-1], *rng.sample(invoices[1:-1], 8)]
    for inv in paid:
        if inv.asset == "ETH":
            h.chain.send_eth(inv.address, ETH)
        else:
            h.chain.token_transfer(deployed.usdt, inv.address, USDT)
    h.chain.mine(3)
    h.scan()
    assert {p.invoice_id for p in h.payments()} == {inv.id for inv in paid}
    with session_scope(h.engine) as s:
        completed = s.exec(select(Invoice.id).where(Invoice.status == "COMPLETED")).all()
    assert set(completed) == {inv.id for inv in paid}


def test_ignored_transfers(h: Harness, deployed: Deployed) -> None:
    chain = h.chain
    eth_inv = h.invoice("ETH", "1")
    usdt_inv = h.invoice("USDT", "3")
    old_inv = h.invoice("OLD", "3")
    # A fake token with the same symbol.
    chain.token_transfer(deployed.fake_usdt, usdt_inv.address, 3 * USDT)
    # Zero-value transfers: native and token.
    chain.send_eth(eth_inv.address, 0)
    chain.token_transfer(deployed.usdt, usdt_inv.address, 0)
    # A reverted transaction that sends ETH to the watched address (it holds reverting code for a moment).
    chain.node.rpc("anvil_setCode", eth_inv.address, "0x60006000fd")
    reverted = chain.send_eth(eth_inv.address, ETH, gas=100_000)
    assert chain.receipt_status(reverted) == 0
    chain.node.rpc("anvil_setCode", eth_inv.address, "0x")
    # A reverted token transfer, and a token that returns false instead of reverting.
    poor = chain.accounts[5]
    failed = chain.token_transfer(deployed.usdt, usdt_inv.address, 3 * USDT, sender=poor, gas=100_000)
    assert chain.receipt_status(failed) == 0
    returned_false = chain.token_transfer(deployed.old, old_inv.address, 3 * USDT, sender=poor, gas=100_000)
    assert chain.receipt_status(returned_false) == 1  # "succeeded", moved nothing, logged nothing
    chain.mine(3)
    h.scan()
    assert h.payments() == []
    assert h.unmatched() == []
    for inv in (eth_inv, usdt_inv, old_inv):
        assert h.get(inv.id).status == "PENDING"
    # The same addresses still work for real payments.
    chain.token_transfer(deployed.old, old_inv.address, 3 * USDT)
    chain.send_eth(eth_inv.address, ETH)
    chain.mine(3)
    h.scan()
    assert h.get(old_inv.id).status == h.get(eth_inv.id).status == "COMPLETED"


def test_other_asset_to_an_invoice_address_goes_to_the_inbox(h: Harness, deployed: Deployed) -> None:
    inv = h.invoice("USDT", "3")
    h.chain.send_eth(inv.address, ETH // 100)
    h.scan()
    [stray] = h.unmatched()
    assert (stray.reason, stray.hint_invoice_id, stray.asset_key) == ("asset_mismatch", inv.id, "native")
    assert h.get(inv.id).status == "PENDING"
