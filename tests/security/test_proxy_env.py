"""RPC clients ignore HTTP_PROXY, HTTPS_PROXY and ALL_PROXY; only a network's ``proxy:`` is used.

A local stand-in proxy records every request that reaches it; the RPC server records its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from paywatch.chains.base import ChainAdapter
from paywatch.chains.evm import EvmAdapter
from paywatch.chains.tron import TronAdapter
from paywatch.chains.tron_http import RetryPolicy
from paywatch.config import NetworkConfig
from paywatch.errors import ChainError
from tests.support.evm_node import evm_network
from tests.support.hostile_rpc import HostileRpc, RecordingProxy
from tests.support.tron_node import tron_network

pytestmark = pytest.mark.attack("secret_leak")

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    with RecordingProxy() as recording:
        yield recording


def _network(family: str, url: str, proxy: str | None) -> NetworkConfig:
    extra = {"proxy": proxy} if proxy else {}
    entry = {"url": url, "headers": {"Authorization": "Bearer env-proxy-secret"}}
    if family == "evm":
        return evm_network([entry], {}, **extra)
    return tron_network([entry], **extra)


def _adapter(network: NetworkConfig) -> ChainAdapter:
    if network.family == "evm":
        return EvmAdapter(network, sleep=lambda _s: None, attempts=1, timeout=5)
    return TronAdapter(network, policy=RetryPolicy(attempts=1, backoff=0.0, timeout=5), sleep=lambda _s: None)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY", "http_proxy"])
@pytest.mark.parametrize("family", ["evm", "tron"])
def test_proxy_environment_is_ignored(
    family: str, variable: str, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, proxy.url)
    with HostileRpc("rpc_error") as server:
        adapter = _adapter(_network(family, f"http://127.0.0.1:{server.port}", None))
        with pytest.raises(ChainError):
            adapter.heights()
    assert server.seen, "the RPC server was reached directly"
    assert proxy.hits == [], f"the environment's proxy received {proxy.hits}"


@pytest.mark.parametrize("family", ["evm", "tron"])
def test_a_network_proxy_is_used(family: str, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with HostileRpc("rpc_error") as server:
        adapter = _adapter(_network(family, f"http://127.0.0.1:{server.port}", proxy.url))
        with pytest.raises(ChainError):
            adapter.heights()
    assert server.seen == [] and proxy.hits, "every request went through the configured proxy"
    assert all(f"127.0.0.1:{server.port}" in hit.path for hit in proxy.hits)
