"""Watched invoices written straight into a benchmark's database (one bulk insert, no API)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from paywatch.domain.transfer import NATIVE
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, Store

STORE_ID = "st_bench"


def watched_invoice(
    invoice_id: str,
    address: str,
    *,
    asset: str,
    asset_key: str,
    decimals: int,
    amount: int,
    confirmations: int,
    now: datetime,
    address_index: int | None = None,
) -> dict[str, Any]:
    """One open address-strategy invoice of the bench store on network ``bench``, as an insert row."""
    return {
        "id": invoice_id,
        "store_id": STORE_ID,
        "network": "bench",
        "asset": asset,
        "asset_key": asset_key,
        "decimals": decimals,
        "amount": amount,
        "match_strategy": "address",
        "address": address,
        "address_key": address,
        "address_index": address_index,
        "memo": None,
        "open_amount": None,
        "confirmations_required": confirmations,
        "status": "PENDING",
        "status_version": 1,
        "flags": [],
        "amount_paid": 0,
        "amount_confirmed": 0,
        "expires_at": now + timedelta(days=1),
        "created_at": now,
        "updated_at": now,
        "metadata": {},
    }


def add_store(engine: Engine, now: datetime) -> None:
    """The store every bench invoice belongs to."""
    with session_scope(engine) as s:
        s.add(Store(id=STORE_ID, name="bench", api_key_hash=secrets.token_hex(32), webhook_secret="x", created_at=now))


def insert_invoices(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """All ``rows`` in one bulk insert."""
    with engine.begin() as conn:
        conn.execute(insert(Invoice), rows)


def _md5(text_: str) -> str:
    return hashlib.md5(text_.encode(), usedforsecurity=False).hexdigest()


def series_id(g: int) -> str:
    """The id :func:`seed_series` gives invoice number ``g`` (as PostgreSQL computes it)."""
    return "inv_" + _md5(f"i{g}")[:20]


def series_address(g: int) -> str:
    """The address :func:`seed_series` gives invoice number ``g`` (as PostgreSQL computes it)."""
    return "0x" + _md5(f"a{g}") + _md5(f"b{g}")[:8]


class SeriesAddresses(Sequence[str]):
    """The addresses of invoices ``first..last`` of :func:`seed_series`, computed when asked
    (a million of them would otherwise be a list the benchmark process carries)."""

    def __init__(self, first: int, last: int, step: int = 1) -> None:
        self._numbers = range(first, last + 1, step)

    def __len__(self) -> int:
        return len(self._numbers)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [series_address(g) for g in self._numbers[index]]
        return series_address(self._numbers[index])


def seed_series(engine: Engine, first: int, last: int, token: str, now: datetime) -> None:
    """Open invoices number ``first`` to ``last`` (inclusive) of the bench store on network ``bench``,
    written by one ``INSERT ... SELECT generate_series`` (PostgreSQL): even numbers ETH, odd numbers
    USDT (``token``), amount 10**6, 12 confirmations, created one millisecond apart from ``now`` on.
    Ids and addresses are md5 digests (:func:`series_id`, :func:`series_address`), so id order is
    unrelated to the order rows sit in the table (as with the API's random ids)."""
    statement = text(
        """
        INSERT INTO invoices (id, store_id, network, asset, asset_key, decimals, amount, match_strategy,
            address, address_key, address_index, memo, open_amount, confirmations_required, status,
            status_version, flags, amount_paid, amount_confirmed, expires_at, created_at, updated_at, metadata)
        SELECT 'inv_' || substr(md5('i' || g), 1, 20), :store, 'bench',
            CASE WHEN g % 2 = 1 THEN 'USDT' ELSE 'ETH' END, CASE WHEN g % 2 = 1 THEN :token ELSE :native END,
            CASE WHEN g % 2 = 1 THEN 6 ELSE 18 END, 1000000, 'address',
            '0x' || md5('a' || g) || substr(md5('b' || g), 1, 8), '0x' || md5('a' || g) || substr(md5('b' || g), 1, 8),
            NULL, NULL, NULL, 12, 'PENDING', 1, '[]', 0, 0, :expires,
            :now + g * interval '1 millisecond', :now + g * interval '1 millisecond', '{}'
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
        """
    )
    with engine.begin() as conn:
        conn.execute(
            statement,
            {
                "store": STORE_ID,
                "token": token,
                "native": NATIVE,
                "expires": now + timedelta(days=1),
                "now": now,
                "first": first,
                "last": last,
            },
        )
