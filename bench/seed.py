"""Watched invoices written straight into a benchmark's database (one bulk insert, no API)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

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
