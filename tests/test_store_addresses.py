"""Shared addresses are per store, HD indexes per account key: no address, amount or memo is contested."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from paywatch.addresses import build_watch_index, shared_address
from paywatch.config import AppConfig, Settings, parse_networks
from paywatch.domain.matching import Match, Unmatched
from paywatch.domain.transfer import Transfer, address_key
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.keys import derive_address
from paywatch.store.db import session_scope
from paywatch.store.models import AddressCounter, DepositAddress, Invoice, Store
from paywatch.stores import create_store
from tests.conftest import EVM_XPUB, T0, TEST_NETWORKS, TRON_XPUB, USDT_ETH, USDT_TRON
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)

TWO_EVM = f"""
networks:
  ethereum:
    family: evm
    chain_id: 1
    rpc_urls: ["http://127.0.0.1:1"]
    xpub: "{EVM_XPUB}"
    assets:
      USDT: {{contract: "{USDT_ETH}", decimals: 6}}
  base:
    family: evm
    chain_id: 8453
    rpc_urls: ["http://127.0.0.1:1"]
    xpub: "{EVM_XPUB}"
    assets:
      ETH: {{native: true, decimals: 18}}
"""

CONFIGURED_SHARED = f"""
networks:
  tron:
    family: tron
    rpc_urls: ["http://127.0.0.1:1"]
    finality: solidified
    deposit_address: "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
    assets:
      USDT: {{contract: "{USDT_TRON}", decimals: 6}}
  ethereum:
    family: evm
    chain_id: 1
    rpc_urls: ["http://127.0.0.1:1"]
    deposit_address: "0x1111111111111111111111111111111111111111"
    xpub: "{EVM_XPUB}"
    assets:
      USDT: {{contract: "{USDT_ETH}", decimals: 6}}
"""


def _config(db_url: str, text: str = TEST_NETWORKS, **settings: object) -> AppConfig:
    return AppConfig(
        settings=Settings(database_url=db_url, networks=Path("n.yaml"), allow_private_callbacks=False, **settings),
        networks=parse_networks(text, source="test-networks.yaml", env={}),
    )


def _store(engine: Engine, name: str = "shop") -> Store:
    with session_scope(engine) as s:
        return create_store(s, name, T0).store


def _invoice(
    engine: Engine, config: AppConfig, store: Store, network: str, asset: str, amount: str, match: str
) -> Invoice:
    with session_scope(engine) as s:
        return create_invoice(s, config, store, InvoiceRequest(network, asset, amount, "01:00", match=match), T0)


def _pay(config: AppConfig, network: str, to: str, amount: int, memo: str | None = None) -> Transfer:
    asset = config.networks[network].assets["USDT"].contract or ""
    return Transfer(
        network=network,
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        block_number=10,
        block_hash="0x" + "cd" * 32,
        block_time=T0 + timedelta(minutes=5),
        from_address="0x" + "22" * 20,
        to_address=to,
        asset_key=address_key(asset) if network == "ethereum" else asset,
        amount=amount,
        memo=memo,
    )


def _match(engine: Engine, config: AppConfig, transfer: Transfer) -> Match | Unmatched | None:
    with Session(engine) as s:
        return build_watch_index(s, config.networks[transfer.network]).match(transfer)


def test_two_networks_sharing_an_xpub_never_issue_the_same_address(engine: Engine, db_url: str) -> None:
    """The index counter was kept per network: ethereum and base both issued index 1, the same address."""
    config = _config(db_url, TWO_EVM)
    store = _store(engine)
    issued = [
        _invoice(engine, config, store, network, asset, "1", "address")
        for _ in range(3)
        for network, asset in (("ethereum", "USDT"), ("base", "ETH"))
    ]
    addresses = [inv.address for inv in issued]
    assert len(set(addresses)) == len(addresses), addresses
    assert sorted(inv.address_index or 0 for inv in issued) == list(range(1, 7))


def test_account_counter_starts_after_indexes_issued_before_the_upgrade(engine: Engine, db_url: str) -> None:
    config = _config(db_url, TWO_EVM)
    store = _store(engine)
    with session_scope(engine) as s:  # what migration 0003 left: a counter per network
        s.add(AddressCounter(network="ethereum", next_index=5))
        s.add(AddressCounter(network="base", next_index=8))
        s.add(AddressCounter(network="other", next_index=500))  # another account: ignored
    inv = _invoice(engine, config, store, "ethereum", "USDT", "1", "address")
    assert inv.address_index == 8


def test_each_store_gets_its_own_shared_address_per_strategy(engine: Engine, db_url: str) -> None:
    config = _config(db_url)
    a, b = _store(engine, "a"), _store(engine, "b")
    a_amount = _invoice(engine, config, a, "ethereum", "USDT", "1", "amount")
    a_memo = _invoice(engine, config, a, "tron", "USDT", "1", "memo")  # memo only where transfers carry one
    b_amount = _invoice(engine, config, b, "ethereum", "USDT", "1", "amount")
    a_fresh = _invoice(engine, config, a, "ethereum", "USDT", "1", "address")
    assert _invoice(engine, config, a, "ethereum", "USDT", "2", "amount").address == a_amount.address
    addresses = [a_amount.address, b_amount.address, a_fresh.address]
    assert len(set(addresses)) == 3
    assert shared_address(config.networks["ethereum"]) not in addresses
    assert a_memo.address != shared_address(config.networks["tron"])
    assert b_amount.amount == a_amount.amount == 1_000_001  # separate addresses, separate amount spaces
    with Session(engine) as s:
        registered = {d.address for d in s.exec(select(DepositAddress))}
    assert {*addresses, a_memo.address} <= registered
    for address in addresses:
        assert address in {derive_address(EVM_XPUB, "evm", i) for i in range(1, 4)}
    assert a_memo.address == derive_address(TRON_XPUB, "tron", 1)


def test_the_cap_counts_open_invoices_only(engine: Engine, db_url: str) -> None:
    from paywatch.invoices import cancel_invoice
    from paywatch.ledger import Ledger

    config = _config(db_url, max_open_amount_invoices=1)
    store = _store(engine)
    first = _invoice(engine, config, store, "ethereum", "USDT", "5", "amount")
    with session_scope(engine) as s:
        cancel_invoice(s, Ledger(config.networks), first, T0, actor="test")
    second = _invoice(engine, config, store, "ethereum", "USDT", "5", "amount")
    assert second.amount != first.amount  # the cancelled one still holds its amount through its late window
