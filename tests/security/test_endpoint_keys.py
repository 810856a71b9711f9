"""Headers and keys belong to one endpoint: a failover node never receives another node's key.

Two local java-tron HTTP nodes (and two local JSON-RPC servers for EVM): the primary fails, the
scan fails over, and the failover's requests are searched for the primary's credentials.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from paywatch.chains.evm import EvmAdapter
from paywatch.chains.tron import TronAdapter
from paywatch.chains.tron_http import API_KEY_HEADER, RetryPolicy
from paywatch.errors import RetryableChainError
from tests.support.evm_node import evm_network
from tests.support.hostile_rpc import HostileRpc
from tests.support.tron_node import TronNode, tron_network

pytestmark = pytest.mark.attack("secret_leak")

FAST = RetryPolicy(attempts=4, backoff=0.0, timeout=5.0)
PRIMARY_KEY = "primary-key-0123456789"
GRID_KEY = "trongrid-key-9876543210"


@pytest.fixture
def nodes() -> Iterator[tuple[TronNode, TronNode]]:
    primary, failover = TronNode(), TronNode()
    try:
        yield primary, failover
    finally:
        primary.stop()
        failover.stop()


def _leaks(headers: dict[str, str], *secrets: str) -> list[str]:
    key_header = API_KEY_HEADER.lower()
    return [f"{k}: {v}" for k, v in headers.items() if any(s in v for s in secrets) or k.lower() == key_header]


def test_tron_failover_node_never_receives_the_primary_key(nodes: tuple[TronNode, TronNode]) -> None:
    primary, failover = nodes
    network = tron_network(
        [{"url": primary.url, "api_key": PRIMARY_KEY, "headers": {"X-Token": "primary-token-xyz"}}, failover.url]
    )
    primary.fail_next(3, status=503)
    adapter = TronAdapter(network, policy=FAST, sleep=lambda _s: None)
    try:
        assert adapter.heights().tip == failover.chain.head  # answered by the failover
    finally:
        adapter.close()
    assert primary.requests and failover.requests
    assert all(r.headers.get(API_KEY_HEADER) == PRIMARY_KEY for r in primary.requests)
    assert all(r.headers.get("X-Token") == "primary-token-xyz" for r in primary.requests)
    for request in failover.requests:
        assert not _leaks(request.headers, PRIMARY_KEY, "primary-token-xyz"), request.headers


def test_tron_network_wide_key_goes_only_to_trongrid_hosts(nodes: tuple[TronNode, TronNode]) -> None:
    primary, failover = nodes
    # the network-wide key is for the TronGrid entry; neither local node may see it
    network = tron_network([primary.url, failover.url, "https://api.trongrid.io"], api_key=GRID_KEY)
    assert [network.endpoint_headers(e) for e in network.endpoints] == [{}, {}, {API_KEY_HEADER: GRID_KEY}]
    primary.fail_next(3, status=503)
    adapter = TronAdapter(network, policy=FAST, sleep=lambda _s: None)
    try:
        adapter.heights()
    finally:
        adapter.close()
    assert primary.requests and failover.requests
    for request in [*primary.requests, *failover.requests]:
        assert not _leaks(request.headers, GRID_KEY), request.headers


def test_evm_endpoint_headers_stay_with_their_endpoint() -> None:
    with HostileRpc("http_500") as primary, HostileRpc("http_500") as failover:
        network = evm_network(
            [
                {"url": f"http://127.0.0.1:{primary.port}", "headers": {"Authorization": "Bearer primary-secret-1"}},
                f"http://127.0.0.1:{failover.port}",
            ],
            {},
        )
        adapter = EvmAdapter(network, sleep=lambda _s: None, attempts=2, timeout=5)
        with pytest.raises(RetryableChainError):
            adapter.heights()
    assert primary.seen and failover.seen
    assert all(s.headers.get("authorization") == "Bearer primary-secret-1" for s in primary.seen)
    assert all("authorization" not in s.headers for s in failover.seen)
