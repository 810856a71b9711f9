"""anvil for the tests and benchmarks: the packaged devnet (paywatch.devnet), skipped when absent.

``anvil`` comes from npm (``npm install @foundry-rs/anvil``; see the README set-up). The node
listens on a free 127.0.0.1 port and is stopped (and waited for) afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from paywatch.config import NetworkConfig
from paywatch.devnet.chain import KEY0, Chain, artifact
from paywatch.devnet.node import CHAIN_ID, find_anvil
from paywatch.devnet.node import AnvilNode as DevnetAnvil
from paywatch.errors import ConfigError
from tests.conftest import EVM_XPUB
from tests.support.ports import free_port

__all__ = ["CHAIN_ID", "KEY0", "AnvilNode", "Chain", "artifact", "evm_network", "free_port"]


class AnvilNode(DevnetAnvil):
    """The devnet node, or a skipped test when anvil is not installed."""

    def __init__(self, *args: str, port: int | None = None, binary: Path | None = None) -> None:
        try:
            find_anvil(binary)
        except ConfigError as exc:
            pytest.skip(str(exc))
        super().__init__(*args, port=port or free_port(), binary=binary)


def evm_network(url: str | Sequence[str | dict[str, Any]], tokens: dict[str, str], **overrides: Any) -> NetworkConfig:
    """A NetworkConfig for anvil: ETH plus the given tokens (6 decimals)."""
    assets: dict[str, Any] = {"ETH": {"native": True, "decimals": 18}}
    assets.update({symbol: {"contract": address, "decimals": 6} for symbol, address in tokens.items()})
    body: dict[str, Any] = {
        "name": "anvil",
        "family": "evm",
        "chain_id": CHAIN_ID,
        "rpc_urls": [url] if isinstance(url, str) else list(url),
        "confirmations": 3,
        "requests_per_second": 1000,  # a local node; production keeps the configured limit
        "xpub": EVM_XPUB,
        "assets": assets,
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)


@pytest.fixture(scope="module", name="anvil_node")
def anvil_node_fixture() -> Iterator[AnvilNode]:
    node = AnvilNode().start()
    try:
        yield node
    finally:
        node.close()
