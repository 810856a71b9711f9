"""RPC response bodies are capped per network (``max_response_bytes``), while they are read.

A local server answers with a valid JSON body far larger than the cap, with and without a
``Content-Length``. Every transport (EVM, Tron, UTXO) refuses it with a retryable error that
names the endpoint only as ``render_endpoint`` renders it, and stops reading early: the server
could not hand over the whole body.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from paywatch.chains.body_limit import DEFAULT_MAX_RESPONSE_BYTES
from paywatch.chains.evm import EvmAdapter
from paywatch.chains.tron import TronAdapter
from paywatch.chains.tron_http import RetryPolicy
from paywatch.chains.utxo import UtxoAdapter
from paywatch.chains.utxo_rpc import redact
from paywatch.config import NetworkConfig
from paywatch.errors import RetryableChainError
from paywatch.redact import render_endpoint
from tests.support.evm_node import evm_network
from tests.support.oversized_rpc import OversizedRpc
from tests.support.tron_node import tron_network

pytestmark = pytest.mark.attack("hostile_input")

CAP = 64 * 1024
BODY = 32 * 1024 * 1024  # far beyond the cap and beyond what socket buffers hold
SECRET = "nodekey-5e1f0c0ffee"


def _utxo(url: str, **overrides: Any) -> NetworkConfig:
    body: dict[str, Any] = {
        "name": "bitcoin",
        "family": "utxo",
        "chain": "bitcoin",
        "rpc_urls": [url],
        "requests_per_second": 1000,
        "assets": {"BTC": {"native": True, "decimals": 8}},
        **overrides,
    }
    return NetworkConfig.model_validate(body)


def _ask(family: str, url: str) -> object:
    """One request through the network's own transport, as the scanner would make it."""
    if family == "evm":
        return EvmAdapter(evm_network(url, {}, max_response_bytes=CAP), attempts=1, timeout=10).heights()
    if family == "utxo":
        return UtxoAdapter(_utxo(url, max_response_bytes=CAP), attempts=1, timeout=10).heights()
    policy = RetryPolicy(attempts=1, backoff=0.0, timeout=10)
    adapter = TronAdapter(tron_network([url], max_response_bytes=CAP), policy=policy, sleep=lambda _s: None)
    try:
        return adapter.http.post("wallet/getnowblock")
    finally:
        adapter.close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "unsized"])
@pytest.mark.parametrize("family", ["evm", "tron", "utxo"])
def test_an_oversized_answer_is_refused_while_reading(family: str, declared: bool) -> None:
    with OversizedRpc(BODY, declared=declared) as server:
        if family == "utxo":
            url = server.url.replace("http://", f"http://rpc:{SECRET}@") + "/"
        else:
            url = f"{server.url}/{SECRET}"
        with pytest.raises(RetryableChainError) as caught:
            _ask(family, url)
        assert server.done.wait(30), "the server is still sending: the client kept reading"
    message = str(caught.value)
    shown = render_endpoint(redact(url) if family == "utxo" else url)  # utxo names its URLs without userinfo
    assert "max_response_bytes" in message and str(CAP) in message
    assert shown in message
    assert SECRET not in message and server.url not in message.replace(shown, "")
    assert server.sent < BODY // 2, f"the client read {server.sent} bytes of a {BODY}-byte body"


def test_the_cap_has_a_default_and_is_validated() -> None:
    assert evm_network("http://127.0.0.1:1", {}).max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 64 * 2**20
    for bad in (0, 100, 2**31, "64MiB"):
        with pytest.raises(ValidationError, match="max_response_bytes"):
            evm_network("http://127.0.0.1:1", {}, max_response_bytes=bad)
