"""Module-scoped anvil with deployed test tokens, reverted to a snapshot after every test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.support.evm_harness import Harness
from tests.support.evm_node import AnvilNode, Chain, evm_network

SUPPLY = 10**15  # 1,000,000,000 units of a 6-decimal token


@dataclass(frozen=True)
class Deployed:
    """The node, the chain helper and the token addresses (lowercase)."""

    node: AnvilNode
    chain: Chain
    usdt: str
    fake_usdt: str
    old: str


def deploy_tokens(node: AnvilNode) -> Deployed:
    chain = Chain(node)
    usdt = chain.deploy("TestToken", "Tether USD", "USDT", 6, SUPPLY)
    fake = chain.deploy("TestToken", "Tether USD", "USDT", 6, SUPPLY)
    old = chain.deploy("FalseToken", SUPPLY)
    for token in (usdt, fake, old):
        chain.token_transfer(token, chain.payer, SUPPLY // 2, sender=chain.accounts[0])
    return Deployed(node, chain, usdt, fake, old)


@pytest.fixture(scope="module", name="deployed")
def deployed_fixture(anvil_node: AnvilNode) -> Deployed:
    return deploy_tokens(anvil_node)


@pytest.fixture(name="chain_snapshot")
def chain_snapshot_fixture(deployed: Deployed) -> Iterator[Deployed]:
    snap = deployed.chain.snapshot()
    try:
        yield deployed
    finally:
        deployed.chain.automine(True)
        deployed.chain.revert(snap)


@pytest.fixture(name="h")
def h_fixture(chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path) -> Harness:
    """A harness on ETH, USDT and OLD (the false-returning token); the cursor starts at the tip."""
    d = chain_snapshot
    network = evm_network(d.node.url, {"USDT": d.usdt, "OLD": d.old})
    harness = Harness(engine, db_url, tmp_path, d.chain, network)
    harness.scan()
    return harness
