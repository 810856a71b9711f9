"""Litecoin with MWEB active (regtest activates it at height 432; that block needs a peg-in).

MWEB blocks carry a HogEx transaction whose first output (``witness_mweb_hogaddr``) holds the
pegged-in coins and whose further outputs are peg-outs to ordinary addresses. Scanning must
cross the activation, skip the MWEB-only outputs and credit a peg-out to a watched address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.support.ltc_node import LtcNode
from tests.support.utxo_harness import UtxoHarness

MWEB_HEIGHT = 432


def _mweb_node() -> Iterator[LtcNode]:
    n = LtcNode(mweb=True).start()
    try:
        n.setup_wallet(MWEB_HEIGHT - 12)
        n.rpc("createwallet", "mw")
        yield n
    finally:
        n.close()


node = pytest.fixture(scope="module")(_mweb_node)
fresh_node = pytest.fixture(_mweb_node)  # below the activation height for every database


def test_scan_across_mweb_activation_with_hogex_and_a_peg_out(
    engine: Engine, db_url: str, tmp_path: Path, fresh_node: LtcNode
) -> None:
    node = fresh_node
    h = UtxoHarness(engine, db_url, tmp_path, node, mempool=False)
    try:
        transparent, pegged_out = h.invoices(["1", "0.7"])
        node.mine(MWEB_HEIGHT - 1 - node.height)
        mweb_address = node.rpc("getnewaddress", "", "mweb", wallet="mw")
        node.pay(mweb_address, "3")  # the peg-in that lets block 432 be mined
        [activation] = node.mine(1)
        assert node.height == MWEB_HEIGHT
        block = node.rpc("getblock", activation, 2)
        assert "mweb" in block
        assert any(o["scriptPubKey"]["type"] == "witness_mweb_hogaddr" for tx in block["tx"] for o in tx["vout"])
        node.pay(transparent.address, "1")
        node.rpc("sendtoaddress", pegged_out.address, "0.7", wallet="mw")  # MWEB coins out: a peg-out
        [paid] = node.mine(1)
        node.mine(2)
        h.scan()
        assert h.get(transparent.id).status == "COMPLETED"
        assert h.get(pegged_out.id).status == "COMPLETED"
        [peg] = h.payments(pegged_out.id)
        hogex = node.rpc("getblock", paid, 2)["tx"][-1]
        assert peg.tx_hash == hogex["txid"] and hogex["vout"][0]["scriptPubKey"]["type"] == "witness_mweb_hogaddr"
        assert peg.amount == 70_000_000 and peg.log_index >= 1
        assert h.unmatched() == []
    finally:
        h.close()


def test_mweb_blocks_and_mempool_after_activation(engine: Engine, db_url: str, tmp_path: Path, node: LtcNode) -> None:
    """Past activation every block has a HogEx; an MWEB transaction in the mempool (outputs
    without scripts) is skipped there and its peg-out is credited once mined."""
    if node.height < MWEB_HEIGHT:
        node.mine(MWEB_HEIGHT - 1 - node.height)
        node.pay(node.rpc("getnewaddress", "", "mweb", wallet="mw"), "3")
        node.mine(1)
    if float(node.rpc("getbalance", wallet="mw")) < 1:
        node.pay(node.rpc("getnewaddress", "", "mweb", wallet="mw"), "3")
        node.mine(1)
    h = UtxoHarness(engine, db_url, tmp_path, node)
    try:
        inv = h.invoice("0.5")
        node.rpc("sendtoaddress", inv.address, "0.5", wallet="mw")
        h.scan()
        assert h.get(inv.id).status == "PENDING"  # a peg-out is not visible as an output before it is mined
        node.mine(3)
        h.scan()
        assert h.get(inv.id).status == "COMPLETED"
    finally:
        h.close()
