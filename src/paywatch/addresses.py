"""Deposit addresses: atomic HD index allocation, shared addresses, memos and unique amounts,
and the watch index the scanners match against."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select, update

from paywatch.chains import utxo_addresses
from paywatch.config import NetworkConfig
from paywatch.domain.matching import Strategy, Watch, WatchIndex
from paywatch.domain.transfer import address_key
from paywatch.errors import ConflictError, InputError
from paywatch.keys import derive_address
from paywatch.store.models import AddressCounter, Invoice, Store

MEMO_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_AMOUNT_OFFSET = 10_000
# First key of the two-int advisory locks used here; that key space never overlaps single-bigint locks.
AMOUNT_LOCK_CLASS = 0x70_77_61  # "pwa"


def shared_address(network: NetworkConfig) -> str | None:
    """The network's shared deposit address: configured, or index 0 of the xpub's external chain."""
    if network.deposit_address:
        return network.deposit_address
    if network.xpub:
        return network_address(network, 0)
    return None


def network_address(network: NetworkConfig, index: int) -> str:
    """The receive address at ``index`` of the network's xpub, in the network's address format."""
    assert network.xpub is not None
    if network.family == "utxo":
        assert network.chain is not None and network.address_type is not None
        return utxo_addresses.derive_address(network.xpub, network.chain, network.net, network.address_type, index)
    return derive_address(network.xpub, network.family, index)


def _dialect(session: Session) -> str:
    bind = session.get_bind()
    return bind.dialect.name if isinstance(bind, Engine) else bind.engine.dialect.name


def allocate_index(session: Session, network: str) -> int:
    """Take the next HD index for ``network`` atomically (index 0 is kept for the shared address)."""
    insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    session.exec(insert(AddressCounter).values(network=network, next_index=1).on_conflict_do_nothing())
    taken = session.exec(
        update(AddressCounter)
        .where(col(AddressCounter.network) == network)
        .values(next_index=col(AddressCounter.next_index) + 1)
        .returning(col(AddressCounter.next_index))
    ).scalar_one()
    return int(taken) - 1


def new_memo() -> str:
    """A short memo that survives copy-paste and wallets that upper-case text."""
    return "".join(secrets.choice(MEMO_ALPHABET) for _ in range(10))


def unique_amount(session: Session, network: str, address: str, asset_key: str, amount: int) -> int:
    """The smallest ``amount + k`` (k >= 1) no open invoice on this shared address expects.

    On PostgreSQL the pick is serialised per (network, address, asset) with a transaction-level
    advisory lock, so concurrent requests see each other's amounts instead of all picking the same
    one and retrying (SQLite's BEGIN IMMEDIATE already serialises writers).
    """
    if _dialect(session) == "postgresql":
        key = f"{network}:{address_key(address)}:{asset_key}"
        session.connection().execute(sa_select(func.pg_advisory_xact_lock(AMOUNT_LOCK_CLASS, func.hashtext(key))))
    taken = set(
        session.exec(
            select(Invoice.open_amount).where(
                Invoice.network == network,
                Invoice.address_key == address_key(address),
                Invoice.asset_key == asset_key,
                col(Invoice.open_amount) > amount,
                col(Invoice.open_amount) <= amount + MAX_AMOUNT_OFFSET,
            )
        ).all()
    )
    for offset in range(1, MAX_AMOUNT_OFFSET + 1):
        if amount + offset not in taken:
            return amount + offset
    raise ConflictError("too many open invoices for this amount on the shared address; retry later", field="amount")


def require_shared(network: NetworkConfig, strategy: Strategy) -> str:
    address = shared_address(network)
    if address is None:
        raise InputError(
            f"network {network.name} has neither deposit_address nor xpub configured for the {strategy} strategy",
            field="match",
        )
    return address


def build_watch_index(session: Session, network: NetworkConfig) -> WatchIndex:
    """Every address paywatch issued on ``network`` plus its shared address, with their invoices."""
    index = WatchIndex()
    shared = shared_address(network)
    if shared is not None:
        index.add_shared(shared)
    rows: Sequence[Any] = (
        session.connection()
        .execute(
            sa_select(
                *(
                    col(column)
                    for column in (
                        Invoice.id,
                        Invoice.match_strategy,
                        Invoice.address,
                        Invoice.asset_key,
                        Invoice.memo,
                        Invoice.open_amount,
                        Invoice.expires_at,
                        Store.late_window_seconds,
                    )
                )
            )
            .join(Store, col(Store.id) == col(Invoice.store_id))
            .where(col(Invoice.network) == network.name)
        )
        .all()
    )
    for inv_id, strategy, address, asset_key, memo, open_amount, expires_at, late_window in rows:
        deadline = int((expires_at + timedelta(seconds=late_window)).timestamp())
        if strategy == Strategy.ADDRESS:
            index.add_address(address, Watch(inv_id, asset_key, deadline))
        elif strategy == Strategy.MEMO and memo:
            index.add_memo(address, memo, Watch(inv_id, asset_key, deadline))
        elif strategy == Strategy.AMOUNT:
            if open_amount is not None:
                index.add_amount(address, Watch(inv_id, asset_key, deadline, open_amount))
            else:
                index.add_shared(address)
    return index
