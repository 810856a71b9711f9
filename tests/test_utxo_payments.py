"""Litecoin payments through the real scanner, the real database and the production adapter,
against a real regtest litecoind (MWEB kept off here; see test_utxo_mweb.py)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from paywatch.store.db import session_scope
from paywatch.store.models import Store
from tests.support.ltc_node import LtcNode
from tests.support.utxo_harness import SAT, UtxoHarness


@pytest.fixture
def h(engine: Engine, db_url: str, tmp_path: Path, ltc_node: LtcNode) -> Iterator[UtxoHarness]:
    harness = UtxoHarness(engine, db_url, tmp_path, ltc_node)
    try:
        yield harness
    finally:
        harness.close()


def test_exact_partial_top_up_and_overpaid_in_one_block(h: UtxoHarness) -> None:
    exact, partial, over = h.invoices(["1.5", "2", "0.1"])
    h.node.pay_many({exact.address: "1.5", partial.address: "0.75", over.address: "0.12345678"})
    h.node.mine(1)
    h.scan()
    assert h.get(exact.id).status == "WAITING_FOR_CONFIRMATIONS"
    assert h.get(partial.id).status == "PARTIAL"
    assert h.get(partial.id).amount_paid == 75_000_000
    assert {p.block_number for inv in (exact, partial, over) for p in h.payments(inv.id)} == {h.node.height}
    h.node.pay(partial.address, "1.25")  # the top-up
    h.node.mine(3)
    h.scan()
    assert h.get(exact.id).status == "COMPLETED" and h.get(exact.id).amount_paid == 150_000_000
    assert h.get(partial.id).status == "COMPLETED" and h.get(partial.id).amount_paid == 2 * SAT
    assert len(h.payments(partial.id)) == 2
    final = h.get(over.id)
    assert final.status == "COMPLETED" and final.flags == ["overpaid"] and final.amount_paid == 12_345_678
    assert h.events(partial.id) == [
        "invoice.created",
        "invoice.payment_received",
        "invoice.partial",
        "invoice.payment_received",
        "invoice.completed",
    ]


def test_two_outputs_of_one_transaction_add_up(h: UtxoHarness) -> None:
    inv = h.invoice("1")
    txid = h.node.pay_twice(inv.address, "0.3", "0.7")
    h.node.mine(3)
    h.scan()
    payments = h.payments(inv.id)
    assert {(p.tx_hash, p.log_index, p.amount) for p in payments} == {(txid, 0, 30_000_000), (txid, 1, 70_000_000)}
    assert h.get(inv.id).status == "COMPLETED" and h.get(inv.id).flags == []


def test_mempool_sighting_then_confirmation_then_completed(h: UtxoHarness) -> None:
    inv = h.invoice("0.5")
    h.scan()
    txid = h.node.pay(inv.address, "0.5")
    result = h.scan()[-1]
    assert result.mempool is not None and result.mempool.matched == 1
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    assert h.get(inv.id).amount_confirmed == 0
    [view] = h.views(inv.id)
    assert view["tx_hash"] == txid and view["in_mempool"] is True and view["rbf"] is False
    assert view["confirmations"] == 0 and view["state"] == "seen" and view["block_number"] is None
    assert h.events(inv.id) == ["invoice.created", "invoice.payment_received", "invoice.waiting_for_confirmations"]
    h.scan()  # polling again changes nothing
    assert len(h.payments(inv.id)) == 1 and len(h.events(inv.id)) == 3
    h.node.mine(1)
    h.scan()
    [view] = h.views(inv.id)
    assert view["in_mempool"] is False and view["confirmations"] == 1 and view["block_number"] == h.node.height
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    h.node.mine(2)
    h.scan()
    assert h.get(inv.id).status == "COMPLETED"
    assert h.events(inv.id)[-1] == "invoice.completed" and "invoice.payment_reverted" not in h.events(inv.id)


def test_rbf_replacement_paying_less_moves_the_invoice_back(h: UtxoHarness) -> None:
    inv = h.invoice("1")
    h.scan()
    first = h.node.pay(inv.address, "1", replaceable=True)
    h.scan()
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    assert [v["rbf"] for v in h.views(inv.id)] == [True]
    second = h.node.replace_paying_less(first, inv.address, "0.6")
    assert first not in h.node.rpc("getrawmempool")
    h.scan()
    invoice = h.get(inv.id)
    assert invoice.status == "PARTIAL" and invoice.amount_paid == 60_000_000 and "reverted" in invoice.flags
    states = {v["tx_hash"]: v["state"] for v in h.views(inv.id)}
    assert states == {first: "orphaned", second: "seen"}
    assert h.events(inv.id)[-3:] == ["invoice.payment_received", "invoice.payment_reverted", "invoice.partial"]
    h.node.mine(3)
    h.scan()
    assert h.get(inv.id).status == "PARTIAL" and h.get(inv.id).amount_confirmed == 60_000_000


def test_store_refusing_rbf_mempool_payments_waits_for_a_block(h: UtxoHarness) -> None:
    with session_scope(h.engine) as s:
        store = s.get(Store, h.store.id)
        assert store is not None
        store.accept_replaceable_mempool = False
        s.add(store)
    inv = h.invoice("0.2")
    h.node.pay(inv.address, "0.2", replaceable=True)
    h.scan()
    assert h.get(inv.id).status == "PENDING" and [v["rbf"] for v in h.views(inv.id)] == [True]
    h.node.mine(1)
    h.scan()
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"


def test_double_spend_mined_by_invalidateblock_and_generateblock(h: UtxoHarness) -> None:
    inv = h.invoice("0.8")
    txid = h.node.pay(inv.address, "0.8")
    [block] = h.node.mine(1)
    h.scan()
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    conflict = h.node.conflicting(txid)
    h.node.rpc("invalidateblock", block)
    h.node.generate_with(conflict)  # the same height, with a transaction spending the same coins
    h.node.mine_empty(1)
    assert txid not in h.node.rpc("getrawmempool")
    results = h.scan()
    assert results[0].reorg_depth == 1
    invoice = h.get(inv.id)
    assert invoice.status == "PENDING" and invoice.amount_paid == 0 and invoice.flags == ["reverted"]
    assert "invoice.payment_reverted" in h.events(inv.id)
    assert [p.orphaned for p in h.payments(inv.id)] == [True]


@pytest.mark.parametrize("depth", [1, 3, 10])
def test_reorg_removes_then_mempool_and_a_new_block_restore(h: UtxoHarness, depth: int) -> None:
    inv = h.invoice("0.3")
    txid = h.node.pay(inv.address, "0.3")
    blocks = h.node.mine(depth)
    h.scan()
    paid_in = h.payments(inv.id)[0].block_hash
    # 3 confirmations complete it; a COMPLETED invoice stays COMPLETED, flagged, when a reorg takes its payment
    expected = "COMPLETED" if depth >= 3 else "WAITING_FOR_CONFIRMATIONS"
    assert paid_in == blocks[0] and h.get(inv.id).status == expected
    h.node.rpc("invalidateblock", blocks[0])
    h.node.mine_empty(depth + 1)  # a longer chain without the payment; it goes back to the mempool
    assert txid in h.node.rpc("getrawmempool")
    results = h.scan()
    assert max(r.reorg_depth for r in results) == depth
    [payment] = h.payments(inv.id)
    assert payment.mempool and not payment.orphaned  # seen again in the mempool
    assert h.get(inv.id).status == expected and "reverted" in h.get(inv.id).flags
    assert "invoice.payment_reverted" in h.events(inv.id)
    h.node.mine(3)
    h.scan()
    [payment] = h.payments(inv.id)
    assert not payment.mempool and payment.block_hash not in blocks
    assert h.get(inv.id).status == "COMPLETED"


def test_coinbase_output_counts_only_after_maturity(h: UtxoHarness) -> None:
    inv = h.invoice("1")
    h.node.rpc("generatetoaddress", 1, inv.address)  # the block reward pays the invoice
    h.scan()
    [payment] = h.payments(inv.id)
    assert payment.maturity == 100 and payment.amount >= SAT
    assert h.get(inv.id).status == "PENDING"
    h.node.mine(98)
    h.scan()
    assert h.get(inv.id).status == "PENDING"
    h.node.mine(1)  # 100 confirmations
    h.scan()
    assert h.get(inv.id).status == "COMPLETED" and h.get(inv.id).flags == ["overpaid"]


def test_unmatched_inbox_for_a_payment_to_the_shared_address(h: UtxoHarness) -> None:
    inv = h.invoice("0.25", match="amount")
    # the store's own shared address for the amount strategy, derived from the account like any other
    assert inv.address in h.node.rpc("deriveaddresses", _descriptor(h), [0, 3])
    h.node.pay(inv.address, "0.2")  # no invoice expects this amount
    h.node.pay(inv.address, Decimal(inv.amount) / SAT)
    h.node.mine(3)
    h.scan()
    assert h.get(inv.id).status == "COMPLETED"
    [item] = h.unmatched()
    assert item.reason == "no_amount_match" and item.amount == 20_000_000 and item.to_address == inv.address


@pytest.mark.slow
def test_one_thousand_watched_addresses(h: UtxoHarness) -> None:
    invoices = h.invoices(["0.001"] * 1000)
    for chunk in range(0, 1000, 250):
        h.node.pay_many({inv.address: "0.001" for inv in invoices[chunk : chunk + 250]})
    h.node.mine(3)
    h.scan()
    statuses = {h.get(inv.id).status for inv in invoices[::50]}
    assert statuses == {"COMPLETED"}
    assert len(h.payments()) == 1000


def _descriptor(h: UtxoHarness) -> str:
    from tests.support.ltc_node import TPUB

    return str(h.node.rpc("getdescriptorinfo", f"wpkh({TPUB}/0/*)")["descriptor"])
