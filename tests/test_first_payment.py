"""No missed first payments: an invoice created and paid before any worker ran is credited.

A network's first scan starts at its tip unless ``start_block`` is set; the invoice records the
chain height at creation, and the first scan never starts above the lowest height of the open
invoices. Real API app, real anvil, the production worker's scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.engine import Engine

from paywatch.chains.base import ChainAdapter, Heights
from paywatch.chains.evm import EvmAdapter
from paywatch.chains.registry import make_adapter
from paywatch.config import AppConfig, Settings, load_config
from paywatch.health import NodeTips
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, NetworkState
from paywatch.worker import Worker
from tests.support.api_helpers import make_api
from tests.support.worker_procs import Devnet, network_entry, write_networks

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def devnet() -> Iterator[Devnet]:
    net = Devnet.start()
    yield net
    net.close()


def _config(devnet: Devnet, db_url: str, tmp_path: Path) -> AppConfig:
    networks = write_networks(tmp_path / "networks.yaml", {"devnet": network_entry([devnet.node.url], devnet.usdt)})
    return load_config(Settings(database_url=db_url, networks=networks))


def test_an_invoice_paid_before_the_first_scan_completes(
    devnet: Devnet, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    config = _config(devnet, db_url, tmp_path)
    api = make_api(engine, config)
    api.clock.now = datetime.now(UTC)  # the chain's block times are real ones
    chain = devnet.chain
    height_at_creation = chain.height()
    reply = api.client.post(
        "/v1/invoices", headers=api.headers(), json={"network": "devnet", "asset": "USDT", "amount": "7.25"}
    )
    assert reply.status_code == 201, reply.text
    invoice = reply.json()
    with session_scope(engine) as session:
        stored = session.get(Invoice, invoice["id"])
        assert stored is not None and stored.created_height == height_at_creation
        assert session.get(NetworkState, "devnet") is None  # no worker has ever scanned the network

    # paid, and buried under more blocks, before any worker runs
    chain.wait(chain.token_transfer(devnet.usdt, invoice["address"], 7_250_000))
    chain.mine(5)

    worker = Worker(config, engine, adapters={"devnet": EvmAdapter(config.networks["devnet"])})
    try:
        worker.scan("devnet")
        worker.refresh("devnet")
    finally:
        for scanner in worker.scanners.values():
            scanner.close()
    body = api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers()).json()
    assert body["status"] == "COMPLETED", body
    assert body["amount_paid"] == "7.25" and len(body["payments"]) == 1
    with session_scope(engine) as session:
        state = session.get(NetworkState, "devnet")
        assert state is not None and state.cursor_height == chain.height()


def test_the_first_scan_starts_at_the_tip_without_open_invoices(
    devnet: Devnet, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    config = _config(devnet, db_url, tmp_path)
    api = make_api(engine, config)
    reply = api.client.post(
        "/v1/invoices", headers=api.headers(), json={"network": "devnet", "asset": "USDT", "amount": "1"}
    )
    assert reply.status_code == 201, reply.text
    assert api.client.post(f"/v1/invoices/{reply.json()['id']}/cancel", headers=api.headers()).status_code == 200
    devnet.chain.mine(3)
    tip = devnet.chain.height()
    worker = Worker(config, engine, adapters={"devnet": EvmAdapter(config.networks["devnet"])})
    try:
        assert worker.scan("devnet") == 1  # a cancelled invoice holds nothing back: only the tip is read
    finally:
        for scanner in worker.scanners.values():
            scanner.close()
    with session_scope(engine) as session:
        state = session.get(NetworkState, "devnet")
        assert state is not None and state.cursor_height == tip


def test_an_unreachable_node_is_not_asked_again_at_once(devnet: Devnet, db_url: str, tmp_path: Path) -> None:
    config = _config(devnet, db_url, tmp_path)
    urls = {"now": ("http://127.0.0.1:1",)}  # refused at first; the live node later
    now = [0.0]
    asked: list[float] = []

    class Probe:
        """The quick adapter on whatever URL is current, noting when it is asked."""

        def heights(self) -> Heights:
            asked.append(now[0])
            network = config.networks["devnet"].model_copy(update={"rpc_urls": urls["now"]})
            return make_adapter(network, quick=True).heights()

    tips = NodeTips(config.networks, factory=lambda _n: cast(ChainAdapter, Probe()), clock=lambda: now[0])
    assert tips("devnet") is None and tips("nowhere") is None  # refused: recorded as unknown
    now[0] = 29.0
    assert tips("devnet") is None and asked == [0.0]  # within the quiet period: not asked again
    urls["now"] = (devnet.node.url,)
    now[0] = 31.0
    assert tips("devnet") == devnet.chain.height() and asked == [0.0, 31.0]
