"""UTXO scanning resilience and admin paths on a real regtest litecoind: a node stopped mid-scan
and restarted (with a new RPC cookie), and `paywatch rescan` / `rescan-tx` through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from paywatch.addresses import network_address
from paywatch.cli.scan import register
from paywatch.errors import RetryableChainError
from tests.support.ltc_node import LtcNode
from tests.support.utxo_harness import UtxoHarness


def test_node_stopped_mid_scan_and_restarted_skips_no_block(
    engine: Engine, db_url: str, tmp_path: Path, ltc_node: LtcNode
) -> None:
    h = UtxoHarness(engine, db_url, tmp_path, ltc_node, prefetch=False, batch_blocks=5)
    try:
        first = ltc_node.height
        invoices = h.invoices(["0.01"] * 6)
        for inv in invoices:
            ltc_node.pay(inv.address, "0.01")
            ltc_node.mine(5)
        tip = ltc_node.height
        h.scanner.step()
        h.scanner.step()
        cookie = ltc_node.cookie_file.read_text()
        ltc_node.stop()
        with pytest.raises(RetryableChainError):
            h.scanner.step()
        stored = h.scanned_numbers()
        assert stored == list(range(first, stored[-1] + 1)) and stored[-1] < tip
        ltc_node.start()
        assert ltc_node.cookie_file.read_text() != cookie  # the adapter must read the new cookie
        h.scan()
        assert h.scanned_numbers() == list(range(first, tip + 1))
        assert {h.get(inv.id).status for inv in invoices} == {"COMPLETED"}
        assert len(h.payments()) == 6
    finally:
        h.close()


def test_cli_rescan_and_rescan_tx_on_utxo(engine: Engine, db_url: str, tmp_path: Path, ltc_node: LtcNode) -> None:
    h = UtxoHarness(engine, db_url, tmp_path, ltc_node)
    try:
        # a backfill: the payment reached an address before its invoice existed, so the scan passed it
        address = network_address(h.config.networks["ltc"], 1)
        txid = ltc_node.pay(address, "0.4")
        [block] = ltc_node.mine(1)
        height = ltc_node.height
        ltc_node.mine(2)
        h.scan()
        inv = h.invoice("0.4")
        assert inv.address == address
        app = typer.Typer()
        register(app, lambda: h.config)  # the CLI builds its own adapter (chains.registry -> UtxoAdapter)
        runner = CliRunner(env={"COLUMNS": "200"})
        args = ["rescan", "ltc", "--from-block", str(height), "--to-block", str(height)]
        dry = runner.invoke(app, [*args, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert inv.id in dry.output and "dry run: nothing was changed" in dry.output and "LTC 0.4" in dry.output
        assert h.payments() == []
        real = runner.invoke(app, args)
        assert real.exit_code == 0, real.output
        [payment] = h.payments(inv.id)
        assert (payment.tx_hash, payment.block_hash, payment.amount) == (txid, block, 40_000_000)
        again = runner.invoke(app, ["rescan-tx", "ltc", txid])
        assert again.exit_code == 0, again.output
        assert len(h.payments()) == 1
        h.scan()  # the live scanner meets the same payment: nothing is credited twice
        assert len(h.payments()) == 1 and h.get(inv.id).status == "COMPLETED"
        bad = runner.invoke(app, ["rescan-tx", "ltc", "00" * 32])
        assert bad.exit_code == 2 and "not found" in bad.output
    finally:
        h.close()


def test_mempool_payment_dropped_by_the_node_moves_back_and_comes_back(
    engine: Engine, db_url: str, tmp_path: Path, ltc_node: LtcNode
) -> None:
    """A node restarted without its mempool (-persistmempool=0) has dropped the payment: the
    invoice moves back with payment_reverted; re-broadcast, it is counted again."""
    h = UtxoHarness(engine, db_url, tmp_path, ltc_node)
    try:
        inv = h.invoice("0.3")
        h.scan()
        txid = ltc_node.pay(inv.address, "0.3")
        raw = ltc_node.rpc("getrawtransaction", txid)
        h.scan()
        assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
        ltc_node.stop()
        ltc_node.start("-persistmempool=0", load_wallet=False)  # a loaded wallet would re-broadcast it
        assert ltc_node.rpc("getrawmempool") == []
        h.scan()
        invoice = h.get(inv.id)
        assert invoice.status == "PENDING" and invoice.flags == ["reverted"]
        assert h.events(inv.id)[-1] == "invoice.payment_reverted"
        ltc_node.rpc("sendrawtransaction", raw)
        ltc_node.load_wallet()
        h.scan()
        [payment] = h.payments(inv.id)
        assert payment.mempool and not payment.orphaned
        assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
        ltc_node.mine(3)
        h.scan()
        assert h.get(inv.id).status == "COMPLETED"
    finally:
        h.close()
