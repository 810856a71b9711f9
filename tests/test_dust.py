"""Dust (issue 9.14): transfers below an asset's ``min_amount`` go to the inbox as ``dust`` and never
change an invoice: 1 wei or 1 sun neither makes an invoice PARTIAL nor blocks cancelling it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine

from paywatch.config import parse_networks, raw_document
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason, Watch, WatchIndex
from paywatch.domain.transfer import NATIVE, Transfer
from paywatch.errors import ConfigError, ConflictError, InputError
from paywatch.invoices import cancel_invoice, get_invoice
from paywatch.store.db import session_scope
from paywatch.unmatched import attach
from tests.conftest import TEST_NETWORKS, TRON_XPUB, USDT_TRON
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture, evm_network  # noqa: F401
from tests.support.tron_node import TronNode, address_of, trc20_transfer, trx_transfer
from tests.test_tron_payments import TronHarness

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
ADDRESS = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
SHARED = "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"


# --- networks.yaml --------------------------------------------------------------------------------


def _networks(**assets: dict[str, Any]) -> str:
    document: dict[str, Any] = yaml.safe_load(TEST_NETWORKS)
    for symbol, extra in assets.items():
        document["networks"]["tron"]["assets"][symbol].update(extra)
    return raw_document(document)


def test_min_amount_is_parsed_in_asset_units() -> None:
    nets = parse_networks(_networks(USDT={"min_amount": "0.01"}, TRX={"min_amount": "0.1"}), source="n.yaml", env={})
    assert nets["tron"].assets["USDT"].min_units == 10_000
    assert nets["tron"].assets["TRX"].min_units == 100_000
    plain = parse_networks(TEST_NETWORKS, source="n.yaml", env={})
    assert plain["tron"].assets["USDT"].min_units == 1  # unset: only zero-value transfers are ignored


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "expected a decimal string"),
        (0.01, 'expected a decimal string such as "0.01"'),
        ("-1", "greater than zero"),
        ("0", "greater than zero"),
        ("0.0000001", "at most 6"),
    ],
)
def test_bad_min_amount_names_the_key(value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_networks(_networks(USDT={"min_amount": value}), source="n.yaml", env={})
    message = str(caught.value)
    assert message.startswith("n.yaml: networks.tron.assets.USDT.min_amount: "), message
    assert expected in message, message


def test_shipped_networks_yaml_sets_a_min_amount_for_every_asset() -> None:
    path = Path(__file__).resolve().parents[1] / "networks.yaml"
    nets = parse_networks(path.read_text(encoding="utf-8"), source=str(path), env={})
    for network in nets.values():
        for symbol, asset in network.assets.items():
            assert asset.min_amount is not None, (network.name, symbol)
            # a cent-sized floor: well above 1 base unit, far below any real payment
            assert 1 < asset.min_units <= 10 ** max(asset.decimals - 1, 0), (network.name, symbol)
    assert nets["ethereum"].assets["USDT"].min_units == 10_000
    assert nets["bsc"].assets["USDT"].min_units == 10**16  # 18 decimals on BSC


# --- pure matching --------------------------------------------------------------------------------


def _transfer(to: str, amount: int, *, asset: str = USDT, memo: str | None = None, log_index: int = 0) -> Transfer:
    return Transfer(
        network="n",
        tx_hash="0x" + "ab" * 32,
        log_index=log_index,
        block_number=10,
        block_hash="0x" + "cd" * 32,
        block_time=T0,
        from_address="0x" + "11" * 20,
        to_address=to,
        asset_key=asset,
        amount=amount,
        memo=memo,
    )


def test_matching_sends_dust_to_the_inbox_with_the_invoice_as_hint() -> None:
    deadline = int((T0 + timedelta(hours=1)).timestamp())
    index = WatchIndex(min_amounts={USDT: 10_000, NATIVE: 10**13})
    index.add_address(ADDRESS, Watch("inv_addr", USDT, deadline))
    index.add_memo(SHARED, "MEMO234567", Watch("inv_memo", USDT, deadline))
    at_min = _transfer(ADDRESS, 10_000)
    dust = _transfer(ADDRESS, 9_999, log_index=1)
    wei = _transfer(ADDRESS, 1, asset=NATIVE, log_index=2)
    memo_dust = _transfer(SHARED, 1, memo="MEMO234567", log_index=3)
    matches, unmatched = index.match_all([at_min, dust, wei, memo_dust])
    assert matches == [Match(at_min, "inv_addr")]
    assert unmatched == [
        Unmatched(dust, UnmatchedReason.DUST, "inv_addr"),
        Unmatched(wei, UnmatchedReason.DUST, "inv_addr"),
        Unmatched(memo_dust, UnmatchedReason.DUST, "inv_memo"),
    ]
    assert WatchIndex().match(replace(dust, log_index=9)) is None  # unwatched stays unwatched


# --- end to end on anvil --------------------------------------------------------------------------


@pytest.fixture(name="evm")
def evm_fixture(chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path) -> Harness:
    d = chain_snapshot
    assets = {
        "ETH": {"native": True, "decimals": 18, "min_amount": "0.00001"},
        "USDT": {"contract": d.usdt, "decimals": 6, "min_amount": "0.01"},
    }
    harness = Harness(engine, db_url, tmp_path, d.chain, evm_network(d.node.url, {}, assets=assets))
    harness.scan()
    return harness


@pytest.mark.anvil
def test_one_wei_and_token_dust_change_nothing_and_cancel_still_works(evm: Harness, deployed: Deployed) -> None:
    eth = evm.invoice("ETH", "0.5")
    usdt = evm.invoice("USDT", "5")
    evm.chain.send_eth(eth.address, 1)
    evm.chain.token_transfer(deployed.usdt, usdt.address, 9_999)  # 0.009999 USDT: below 0.01
    evm.chain.mine(3)
    evm.scan()
    for invoice in (eth, usdt):
        got = evm.get(invoice.id)
        assert (got.status, got.amount_paid, got.status_version) == ("PENDING", 0, 1)
    assert evm.payments() == []
    inbox = evm.unmatched()
    assert sorted((r.reason, r.hint_invoice_id, r.amount) for r in inbox) == sorted(
        [("dust", eth.id, 1), ("dust", usdt.id, 9_999)]
    )
    with session_scope(evm.engine) as s, pytest.raises(ConflictError, match="dust"):
        attach(s, evm.ledger, inbox[0].id or 0, inbox[0].hint_invoice_id or "", evm.clock(), actor="test")
    with session_scope(evm.engine) as s:
        for invoice in (eth, usdt):
            cancel_invoice(s, evm.ledger, get_invoice(s, None, invoice.id), evm.clock(), actor="test")
    assert {evm.get(i.id).status for i in (eth, usdt)} == {"CANCELLED"}


@pytest.mark.anvil
def test_a_transfer_at_min_amount_counts(evm: Harness, deployed: Deployed) -> None:
    usdt = evm.invoice("USDT", "5")
    evm.chain.token_transfer(deployed.usdt, usdt.address, 10_000)
    evm.scan()
    got = evm.get(usdt.id)
    assert (got.status, got.amount_paid) == ("PARTIAL", 10_000)
    assert evm.unmatched() == []


@pytest.mark.anvil
def test_invoice_below_min_amount_is_refused(evm: Harness) -> None:
    with pytest.raises(InputError, match="min_amount") as caught:
        evm.invoice("USDT", "0.005")
    assert caught.value.field == "amount"


# --- end to end on the local Tron node ------------------------------------------------------------


@pytest.fixture
def node() -> Iterator[TronNode]:
    with TronNode() as n:
        yield n


def test_one_sun_to_a_memo_invoice_is_dust_on_tron(engine: Engine, db_url: str, tmp_path: Path, node: TronNode) -> None:
    assets = {
        "TRX": {"native": True, "decimals": 6, "min_amount": "0.1"},
        "USDT": {"contract": USDT_TRON, "decimals": 6, "min_amount": "0.01"},
    }
    h = TronHarness(engine, db_url, tmp_path, node, assets=assets)
    assert h.network.xpub == TRON_XPUB
    trx = h.invoice("TRX", "3", match="memo")
    usdt = h.invoice("USDT", "12")
    payer = address_of("payer")
    h.pay(trx_transfer(payer, trx.address, 1, memo=trx.memo), trc20_transfer(USDT_TRON, payer, usdt.address, 9_999))
    h.solidify_all()
    h.scan()
    assert [(h.get(i.id).status, h.get(i.id).amount_paid) for i in (trx, usdt)] == [("PENDING", 0)] * 2
    assert sorted((r.reason, r.hint_invoice_id) for r in h.unmatched()) == sorted([("dust", trx.id), ("dust", usdt.id)])
    assert h.payments() == []
