"""Internal native transfers (``internal_transfers: trace``) on anvil, through the real scanner and DB.

The contracts are in ``src/paywatch/devnet/contracts/Payers.sol`` (compiled offline with solc-js).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from web3 import Web3

from paywatch.chains.evm import EvmAdapter
from paywatch.chains.evm_trace import calltracer_calls, internal_index, parity_calls
from paywatch.config import AppConfig, Settings
from paywatch.errors import ConfigError
from paywatch.rescan import rescan_transaction
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from paywatch.worker import Worker
from tests.support.evm_harness import Harness
from tests.support.evm_node import AnvilNode, Chain, anvil_node_fixture, artifact, evm_network  # noqa: F401
from tests.support.evm_proxy import RpcProxy

pytestmark = pytest.mark.anvil

ETH = 10**18
TRACES = {"debug_traceBlockByHash", "trace_block"}


@dataclass(frozen=True)
class Payers:
    """The node, the chain helper and the deployed payer contracts (web3 contract objects)."""

    node: AnvilNode
    chain: Chain
    forwarder: Any
    batch: Any
    reverting: Any
    safe: Any
    refuser_code: str


@pytest.fixture(scope="module", name="payers")
def payers_fixture(anvil_node: AnvilNode) -> Payers:
    chain = Chain(anvil_node)

    def deployed(name: str) -> Any:
        abi, _ = artifact(name)
        return chain.w3.eth.contract(address=Web3.to_checksum_address(chain.deploy(name)), abi=abi)

    refuser = deployed("Refuser")
    safe = deployed("MiniSafe")  # owned by account 0, the deployer
    chain.send_eth(safe.address, 10 * ETH)
    code = str(anvil_node.rpc("eth_getCode", refuser.address, "latest"))
    forwarder, batch, reverting = deployed("Forwarder"), deployed("BatchPayer"), deployed("RevertingPayer")
    return Payers(anvil_node, chain, forwarder, batch, reverting, safe, code)


@pytest.fixture(name="fresh")
def fresh_fixture(payers: Payers) -> Iterator[Payers]:
    snap = payers.chain.snapshot()
    try:
        yield payers
    finally:
        payers.chain.revert(snap)


def _harness(p: Payers, engine: Engine, db_url: str, tmp_path: Path, url: str | None = None, **kw: Any) -> Harness:
    network = evm_network(url or p.node.url, {}, internal_transfers="trace", **kw)
    adapter = EvmAdapter(network, sleep=lambda _s: None)
    adapter.preflight()
    harness = Harness(engine, db_url, tmp_path, p.chain, network, adapter=adapter)
    harness.scan()
    return harness


@pytest.fixture(name="h")
def h_fixture(fresh: Payers, engine: Engine, db_url: str, tmp_path: Path) -> Harness:
    return _harness(fresh, engine, db_url, tmp_path)


def _send(p: Payers, call: Any, value: int = 0, sender: str | None = None) -> str:
    sent = call.transact({"from": sender or p.chain.payer, "value": value})
    tx_hash = "0x" + sent.hex().removeprefix("0x")
    p.chain.wait(tx_hash)
    assert p.chain.receipt_status(tx_hash) == 1
    return tx_hash.lower()


def _events(h: Harness, invoice_id: str) -> list[str]:
    with session_scope(h.engine) as s:
        rows = s.exec(
            select(CallbackEvent.type).where(CallbackEvent.invoice_id == invoice_id).order_by(col(CallbackEvent.id))
        ).all()
    return list(rows)


def _cs(address: str) -> str:
    return Web3.to_checksum_address(address)


def test_forwarded_payment_is_credited_with_its_trace_position(h: Harness, fresh: Payers) -> None:
    inv = h.invoice("ETH", "1")
    direct = h.invoice("ETH", "0.5")
    tx = _send(fresh, fresh.forwarder.functions.forward(_cs(inv.address)), ETH)
    h.chain.send_eth(direct.address, ETH // 2)  # a top-level transfer still counts once, at -1
    h.scan()
    [payment] = h.payments(inv.id)
    assert (payment.tx_hash, payment.log_index, payment.amount) == (tx, internal_index(1), ETH)
    assert payment.from_address == fresh.forwarder.address.lower() and payment.log_index == -2
    assert [p.log_index for p in h.payments(direct.id)] == [-1]
    h.chain.mine(2)
    h.scan()
    assert h.get(inv.id).status == "COMPLETED"
    assert _events(h, inv.id) == [
        "invoice.created",
        "invoice.payment_received",
        "invoice.waiting_for_confirmations",
        "invoice.completed",
    ]
    h.scan()
    assert len(h.payments(inv.id)) == 1


def test_batch_payer_pays_three_invoices_in_one_transaction(h: Harness, fresh: Payers) -> None:
    invoices = [h.invoice("ETH", amount) for amount in ("0.1", "0.2", "0.3")]
    amounts = [ETH // 10, 2 * ETH // 10, 3 * ETH // 10]
    call = fresh.batch.functions.pay([_cs(i.address) for i in invoices], amounts)
    tx = _send(fresh, call, sum(amounts))
    h.chain.mine(2)
    h.scan()
    paid = [h.payments(i.id) for i in invoices]
    assert [(p.tx_hash, p.log_index, p.amount) for [p] in paid] == [
        (tx, -2, amounts[0]),
        (tx, -3, amounts[1]),
        (tx, -4, amounts[2]),
    ]
    assert [h.get(i.id).status for i in invoices] == ["COMPLETED"] * 3


def test_reverted_inner_sends_are_never_credited(h: Harness, fresh: Payers) -> None:
    good, bad, refusing = h.invoice("ETH", "0.5"), h.invoice("ETH", "0.5"), h.invoice("ETH", "0.5")
    # the send to `bad` happens inside a frame that reverts (the send's own frame succeeded)
    _send(fresh, fresh.reverting.functions.pay(_cs(good.address), _cs(bad.address)), ETH)
    # the recipient's own frame reverts: its code refuses the coin; the transaction goes on
    fresh.node.rpc("anvil_setCode", _cs(refusing.address), fresh.refuser_code)
    _send(fresh, fresh.reverting.functions.payRefusing(_cs(refusing.address)), ETH // 2)
    h.scan()
    assert [p.amount for p in h.payments(good.id)] == [ETH // 2]
    assert h.payments(bad.id) == [] and h.payments(refusing.id) == []
    assert h.unmatched() == []
    assert h.get(bad.id).status == "PENDING" and h.get(refusing.id).status == "PENDING"


def test_safe_exec_transaction_pays_an_invoice(h: Harness, fresh: Payers) -> None:
    inv = h.invoice("ETH", "2")
    call = fresh.safe.functions.execTransaction(_cs(inv.address), 2 * ETH, b"")
    tx = _send(fresh, call, sender=fresh.chain.accounts[0])
    h.chain.mine(2)
    h.scan()
    [payment] = h.payments(inv.id)
    assert (payment.tx_hash, payment.log_index, payment.from_address) == (tx, -2, fresh.safe.address.lower())
    assert h.get(inv.id).status == "COMPLETED"


def test_internal_coin_of_the_wrong_asset_goes_to_the_inbox(
    fresh: Payers, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    h = _harness(fresh, engine, db_url, tmp_path, assets=_with_token())
    inv = h.invoice("USDT", "3")
    tx = _send(fresh, fresh.forwarder.functions.forward(_cs(inv.address)), ETH // 100)
    h.scan()
    [stray] = h.unmatched()
    assert (stray.tx_hash, stray.log_index, stray.reason, stray.hint_invoice_id) == (tx, -2, "asset_mismatch", inv.id)
    assert h.get(inv.id).status == "PENDING"


def _with_token() -> dict[str, Any]:
    """ETH plus a USDT entry (any contract address: no token transfer is made)."""
    token = "0x" + "11" * 20
    return {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": token, "decimals": 6}}


def test_reorg_orphans_an_internal_payment(fresh: Payers, engine: Engine, db_url: str, tmp_path: Path) -> None:
    h = _harness(fresh, engine, db_url, tmp_path, confirmations=100)
    inv = h.invoice("ETH", "1")
    _send(fresh, fresh.forwarder.functions.forward(_cs(inv.address)), ETH)
    h.chain.mine(1)
    h.scan()
    assert h.get(inv.id).status == "WAITING_FOR_CONFIRMATIONS"
    h.chain.reorg(2)  # the replacement blocks do not carry it
    h.chain.mine(1)
    assert h.scan()[0].reorg_depth == 2
    [payment] = h.payments(inv.id)
    assert payment.orphaned
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("PENDING", 0, ["reverted"])
    assert _events(h, inv.id).count("invoice.payment_reverted") == 1


def test_rescan_tx_finds_internal_payments_once(h: Harness, fresh: Payers) -> None:
    invoices = [h.invoice("ETH", "0.1"), h.invoice("ETH", "0.1")]
    call = fresh.batch.functions.pay([_cs(i.address) for i in invoices], [ETH // 10, ETH // 10])
    tx = _send(fresh, call, ETH // 5)
    h.scan()  # rescans read only blocks the scanner has stored
    report = rescan_transaction(h.engine, h.network, h.adapter, h.ledger, tx, clock=h.clock)
    # the rescan finds the same two calls (same identities) and credits nothing twice
    assert sorted((p.log_index, p.change) for p in report.payments) == [(-3, "unchanged"), (-2, "unchanged")]
    assert [len(h.payments(i.id)) for i in invoices] == [1, 1]


def test_trace_block_gives_the_same_identities(fresh: Payers, engine: Engine, db_url: str, tmp_path: Path) -> None:
    with RpcProxy(fresh.node.url) as proxy:
        proxy.refused_methods = {"debug_traceBlockByHash", "debug_traceTransaction"}
        h = _harness(fresh, engine, db_url, tmp_path, url=proxy.url)
        invoices = [h.invoice("ETH", "0.1"), h.invoice("ETH", "0.2"), h.invoice("ETH", "0.3")]
        amounts = [ETH // 10, 2 * ETH // 10, 3 * ETH // 10]
        tx = _send(fresh, fresh.batch.functions.pay([_cs(i.address) for i in invoices], amounts), sum(amounts))
        bad = h.invoice("ETH", "0.5")
        _send(fresh, fresh.reverting.functions.pay(_cs(invoices[0].address), _cs(bad.address)), ETH)
        h.scan()
        assert [(p.tx_hash, p.log_index) for i in invoices[1:] for p in h.payments(i.id)] == [(tx, -3), (tx, -4)]
        assert [p.log_index for p in h.payments(invoices[0].id)] == [-2, -2]
        assert h.payments(bad.id) == []


def test_off_is_the_default_and_sees_no_internal_transfer(
    fresh: Payers, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    network = evm_network(fresh.node.url, {})
    assert network.internal_transfers == "off"
    h = Harness(engine, db_url, tmp_path, fresh.chain, network)
    h.scan()
    inv = h.invoice("ETH", "1")
    _send(fresh, fresh.forwarder.functions.forward(_cs(inv.address)), ETH)
    h.scan()
    assert h.payments(inv.id) == []


@pytest.mark.parametrize("code", [-32601, -32000])
def test_a_node_without_traces_stops_the_worker_at_start(
    fresh: Payers, engine: Engine, db_url: str, tmp_path: Path, code: int
) -> None:
    with RpcProxy(fresh.node.url) as proxy:
        proxy.refused_methods, proxy.refused_code = set(TRACES), code
        network = evm_network(proxy.url, {}, internal_transfers="trace")
        config = AppConfig(Settings(database_url=db_url, networks=tmp_path / "n.yaml"), {network.name: network})
        adapter = EvmAdapter(network, sleep=lambda _s: None)
        worker = Worker(config, engine, adapters={network.name: adapter})
        with pytest.raises(ConfigError, match=r"networks\.anvil\.internal_transfers: `trace` needs"):
            asyncio.run(worker.run(install_signals=False))
        # a scan started without the start-up check fails loudly too, and stores nothing
        tip = fresh.chain.height()
        with pytest.raises(ConfigError, match="refused both"):
            adapter.fetch_range(tip, tip, lambda _a: True)


# --- the crediting rules on hand-written traces (the shapes Geth and Erigon answer) ---------------


def _frame(to: str, value: int, *calls: dict[str, Any], error: bool = False, kind: str = "CALL") -> dict[str, Any]:
    frame: dict[str, Any] = {"type": kind, "from": "0xaa", "to": to, "value": hex(value), "calls": list(calls)}
    if error:
        frame["error"] = "execution reverted"
    return frame


def test_calltracer_rules() -> None:
    root = _frame(
        "0xc0",
        5,
        _frame("0x01", 1),  # 1: credited
        _frame("0x02", 1, _frame("0x03", 1), error=True),  # 2: reverted, 3: under it
        _frame("0x04", 0, _frame("0x05", 2)),  # 4: no value, 5: credited
        _frame("0x06", 3, kind="DELEGATECALL"),  # 6: not a CALL
        _frame("0x07", 4),  # 7: credited
    )
    assert [(c.position, c.to_address, c.value) for c in calltracer_calls("0xt", root)] == [
        (1, "0x01", 1),
        (5, "0x05", 2),
        (7, "0x07", 4),
    ]
    assert list(calltracer_calls("0xt", {**root, "error": "execution reverted"})) == []


def test_parity_rules_match_the_calltracer_positions() -> None:
    def trace(address: list[int], to: str, value: int, error: bool = False, call_type: str = "call") -> dict[str, Any]:
        item: dict[str, Any] = {
            "type": "call",
            "transactionHash": "0xT",
            "traceAddress": address,
            "action": {"callType": call_type, "from": "0xaa", "to": to, "value": hex(value)},
        }
        if error:
            item["error"] = "Reverted"
        return item

    traces = [
        trace([], "0xc0", 5),
        trace([0], "0x01", 1),
        trace([1], "0x02", 1, error=True),
        trace([1, 0], "0x03", 1),
        trace([2], "0x04", 0),
        trace([2, 0], "0x05", 2),
        trace([3], "0x06", 3, call_type="delegatecall"),
        trace([4], "0x07", 4),
        {"type": "reward", "action": {"value": "0x1"}},
    ]
    assert [(c.tx_hash, c.position, c.to_address) for c in parity_calls(traces)] == [
        ("0xt", 1, "0x01"),
        ("0xt", 5, "0x05"),
        ("0xt", 7, "0x07"),
    ]
    assert list(parity_calls([{**traces[0], "error": "Reverted"}, *traces[1:]])) == []
