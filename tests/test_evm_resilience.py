"""Failures between the scanner and its node: a node restart, refused ranges, failover, lag."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from paywatch.chains.evm import EvmAdapter
from paywatch.chains.evm_rpc import Web3Provider
from paywatch.errors import RetryableChainError
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deploy_tokens, deployed_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import AnvilNode, anvil_node_fixture, evm_network, free_port  # noqa: F401
from tests.support.evm_proxy import RpcProxy

pytestmark = pytest.mark.anvil

USDT = 10**6
ETH = 10**18


class StopNodeOnLogs:
    """A real web3 provider that stops the node when the scan reaches ``eth_getLogs`` (armed once)."""

    def __init__(self, url: str, node: AnvilNode) -> None:
        self._inner = Web3Provider(url, timeout=5)
        self._node = node
        self.armed = False

    def make_request(self, method: str, params: Any) -> Any:
        if self.armed and method == "eth_getLogs":
            self.armed = False
            self._node.stop()  # block bodies of this range were read; the logs never arrive
        return self._inner.make_request(method, params)

    def make_batch_request(self, calls: Sequence[tuple[str, Any]]) -> Any:
        return self._inner.make_batch_request(calls)


def test_node_stopped_mid_scan_and_restarted_skips_nothing(engine: Engine, db_url: str, tmp_path: Path) -> None:
    node = AnvilNode("--state", str(tmp_path / "anvil-state.json")).start()
    try:
        d = deploy_tokens(node)
        providers: list[StopNodeOnLogs] = []

        def factory(url: str) -> StopNodeOnLogs:
            providers.append(StopNodeOnLogs(url, node))
            return providers[-1]

        network = evm_network(node.url, {"USDT": d.usdt}, batch_blocks=4)
        adapter = EvmAdapter(network, provider_factory=factory, sleep=lambda _s: None, attempts=2)
        # The node's blocks carry wall-clock time; the clock must work while the node is down.
        # No prefetch: the stop must hit the fetch of the step under test, not a read-ahead that
        # may or may not have finished before the node goes down (that made this test flaky).
        h = Harness(
            engine, db_url, tmp_path, d.chain, network, adapter=adapter, clock=lambda: datetime.now(UTC), prefetch=False
        )
        h.scan()
        start = h.state().cursor_height
        assert start is not None
        invoices = [h.invoice("USDT" if i % 2 else "ETH", "2") for i in range(6)]
        for inv in invoices:
            if inv.asset == "ETH":
                d.chain.send_eth(inv.address, 2 * ETH)
            else:
                d.chain.token_transfer(d.usdt, inv.address, 2 * USDT)
            d.chain.mine(2)
        tip = d.chain.height()
        h.scanner.step()
        cursor = h.state().cursor_height
        assert cursor == start + 4
        providers[0].armed = True
        with pytest.raises(RetryableChainError):
            h.scanner.step()
        state = h.state()
        assert state.cursor_height == cursor and state.last_error and "every RPC URL failed" in state.last_error
        with pytest.raises(RetryableChainError):
            h.scanner.step()  # still down: heights cannot be read; nothing moves
        assert h.state().cursor_height == cursor

        node.start()  # same port, same chain (state file)
        h.scan()
        state = h.state()
        assert state.cursor_height == tip and state.last_error is None
        assert h.scanned_numbers() == list(range(start, tip + 1))
        assert {p.invoice_id for p in h.payments()} == {inv.id for inv in invoices}
    finally:
        node.close()


def test_provider_refusing_large_log_ranges_loses_nothing(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    with RpcProxy(d.node.url) as proxy:
        proxy.log_limit = 3
        network = evm_network(proxy.url, {"USDT": d.usdt}, max_block_range=2000, batch_blocks=50)
        h = Harness(engine, db_url, tmp_path, d.chain, network)
        h.scan()
        invoices = [h.invoice("USDT", "1") for _ in range(12)]
        for inv in invoices:
            d.chain.token_transfer(d.usdt, inv.address, USDT)
            d.chain.mine(2)
        h.scan()
        assert {p.invoice_id for p in h.payments()} == {inv.id for inv in invoices}
        assert proxy.refused_logs > 0
        assert isinstance(h.adapter, EvmAdapter) and h.adapter.log_span <= 3
        answered = sorted(q for q in proxy.log_queries if q[1] - q[0] + 1 <= 3)
        covered = {n for lo, hi in answered for n in range(lo, hi + 1)}
        first = min(p.block_number for p in h.payments())
        assert set(range(first, d.chain.height() + 1)) <= covered


def test_failover_to_the_next_rpc_url_and_retry_after_503(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    sleeps: list[float] = []
    with RpcProxy(d.node.url) as proxy:
        dead = f"http://127.0.0.1:{free_port()}"
        network = evm_network([dead, proxy.url], {"USDT": d.usdt})
        adapter = EvmAdapter(network, sleep=sleeps.append, attempts=3)
        h = Harness(engine, db_url, tmp_path, d.chain, network, adapter=adapter)
        h.scan()
        inv = h.invoice("USDT", "4")
        d.chain.token_transfer(d.usdt, inv.address, 4 * USDT)
        proxy.fail_requests = 1  # the dead URL refuses, the proxy answers 503 once, then works
        h.scan()
        assert [p.amount for p in h.payments(inv.id)] == [4 * USDT]
        assert sleeps and all(0 < s <= 8 for s in sleeps)


def test_a_block_that_cannot_be_read_stops_the_scan(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    with RpcProxy(d.node.url) as proxy:
        network = evm_network(proxy.url, {"USDT": d.usdt}, batch_blocks=3)
        h = Harness(engine, db_url, tmp_path, d.chain, network)
        h.scan()
        base = h.state().cursor_height
        assert base is not None
        inv = h.invoice("ETH", "1")
        d.chain.mine(4)
        d.chain.send_eth(inv.address, ETH)  # block base + 5
        d.chain.mine(3)
        proxy.missing_blocks = {base + 5}
        h.scanner.step()  # base+1 .. base+3
        with pytest.raises(RetryableChainError):
            h.scanner.step()  # base+4 .. base+6: base+5 is missing, nothing of the range is stored
        with pytest.raises(RetryableChainError):
            h.scanner.step()
        assert h.state().cursor_height == base + 3
        assert h.payments() == []
        proxy.missing_blocks = set()
        h.scan()
        assert h.scanned_numbers() == list(range(base, d.chain.height() + 1))
        assert [p.block_number for p in h.payments(inv.id)] == [base + 5]
