"""Reorgs (``anvil_reorg``) and the ``finalized`` tag, through the real scanner and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import AnvilNode, Chain, anvil_node_fixture, evm_network  # noqa: F401

pytestmark = pytest.mark.anvil

ETH = 10**18


@pytest.fixture(name="rh")
def rh_fixture(chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path) -> Harness:
    """Confirmations set high so that a reorged payment is still WAITING (not terminal) when it goes."""
    d = chain_snapshot
    harness = Harness(engine, db_url, tmp_path, d.chain, evm_network(d.node.url, {"USDT": d.usdt}, confirmations=100))
    harness.scan()
    return harness


@pytest.mark.parametrize("depth", [1, 5, 30])
def test_reorg_removes_a_payment_then_it_returns_once(rh: Harness, depth: int) -> None:
    chain = rh.chain
    inv = rh.invoice("ETH", "1")
    raw, tx_hash = chain.signed_eth(inv.address, ETH, chain.nonce(chain.accounts[0]))
    chain.send_raw(raw)
    paid_at = chain.height()
    chain.mine(depth - 1)  # the payment sits `depth` blocks below the new tip
    rh.scan()
    assert rh.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"

    chain.reorg(depth)  # the replacement blocks do not contain the payment
    chain.mine(1)
    results = rh.scan()
    assert results[0].reorg_depth == depth
    [payment] = rh.payments(inv.id)
    assert payment.orphaned and payment.block_number == paid_at
    got = rh.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("PENDING", 0, ["reverted"])
    assert rh.scanned_numbers() == list(range(rh.scanned_numbers()[0], chain.height() + 1))

    chain.send_raw(raw)  # the replacement chain carries it later
    rh.scan()
    [payment] = rh.payments(inv.id)
    assert not payment.orphaned and payment.tx_hash == tx_hash and payment.block_number == chain.height()
    got = rh.get(inv.id)
    assert (got.status, got.amount_paid) == ("WAITING_FOR_CONFIRMATIONS", ETH)
    with session_scope(rh.engine) as s:
        types = s.exec(
            select(CallbackEvent.type).where(CallbackEvent.invoice_id == inv.id).order_by(col(CallbackEvent.id))
        ).all()
    assert types.count("invoice.payment_reverted") == 1


def test_reorg_remines_the_same_transaction_in_another_block(rh: Harness) -> None:
    chain = rh.chain
    inv = rh.invoice("ETH", "0.5")
    raw, tx_hash = chain.signed_eth(inv.address, ETH // 2, chain.nonce(chain.accounts[0]))
    chain.send_raw(raw)
    first_block = chain.height()
    chain.mine(2)
    rh.scan()
    [before] = rh.payments(inv.id)
    assert before.block_number == first_block

    chain.reorg(3, [(raw, 2)])  # same signed transaction, two blocks later
    chain.mine(1)
    rh.scan()
    [after] = rh.payments(inv.id)
    assert after.tx_hash == tx_hash and not after.orphaned
    receipt = chain.node.rpc("eth_getTransactionReceipt", tx_hash)  # where anvil re-mined it
    assert after.block_number == int(receipt["blockNumber"], 16) and after.block_hash == receipt["blockHash"]
    assert after.block_hash != before.block_hash
    got = rh.get(inv.id)
    assert (got.status, got.amount_paid) == ("WAITING_FOR_CONFIRMATIONS", ETH // 2)


@pytest.fixture(scope="module", name="finality_node")
def finality_node_fixture() -> Iterator[AnvilNode]:
    node = AnvilNode("--slots-in-an-epoch", "2").start()  # finalized = tip - 2 epochs = tip - 4
    try:
        yield node
    finally:
        node.close()


def test_finality_mode_uses_the_finalized_tag(
    finality_node: AnvilNode, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    chain = Chain(finality_node)
    network = evm_network(finality_node.url, {}, confirmations=None, finality="finalized")
    fh = Harness(engine, db_url, tmp_path, chain, network)
    chain.mine(5)
    fh.scan()
    inv = fh.invoice("ETH", "1")
    assert inv.confirmations_required == 0
    chain.send_eth(inv.address, ETH)
    paid_at = chain.height()
    chain.mine(3)
    fh.scan()
    state = fh.state()
    assert (state.tip_height, state.final_height) == (paid_at + 3, paid_at - 1)
    assert fh.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"  # 4 blocks on top, not finalized yet
    chain.mine(1)
    fh.scan()
    assert fh.state().final_height == paid_at
    assert fh.get(inv.id).status == "COMPLETED"
