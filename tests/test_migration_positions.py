"""Migration 0006_reorg: transfers are identified by their position within their transaction.

Rows stored before it are converted where the position is known offline (native transfers, Tron
logs); EVM token rows keep NULL and are adopted the next time the transfer is seen.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig
from paywatch.domain.matching import Match
from paywatch.domain.transfer import Transfer, address_key
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.store.db import alembic_config, session_scope, upgrade
from paywatch.store.models import Payment
from paywatch.stores import create_store
from tests.conftest import T0, USDT_ETH, USDT_TRON

EVM_TX = "0x" + "ab" * 32
TRON_TX = "cd" * 32


def _insert(engine: Engine, invoice_id: str, network: str, tx: str, log_index: int, asset: str) -> None:
    """A payment row as revision 0005_ledger stored it (no ``tx_position`` column yet)."""
    model = Payment.__table__  # type: ignore[attr-defined]
    values = {
        "network": network,
        "tx_hash": tx,
        "log_index": log_index,
        "from_address": "from",
        "to_address": "to",
        "asset_key": asset,
        "amount": 5,
        "block_number": 10,
        "block_hash": "h10",
        "block_time": T0,
        "invoice_id": invoice_id,
        "success": True,
        "orphaned": False,
        "late": False,
        "created_at": T0,
        "updated_at": T0,
    }
    # only the columns that revision has: later revisions' columns do not exist yet
    table = sa.table("payments", *(sa.column(name, model.c[name].type) for name in values))
    with engine.begin() as conn:
        conn.execute(table.insert().values(**values))


def test_existing_rows_get_their_position_or_are_adopted_later(
    db_url: str, engine: Engine, app_config: AppConfig
) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        invoice_id = create_invoice(s, app_config, store, InvoiceRequest("ethereum", "USDT", "1"), T0).id
    command.downgrade(alembic_config(db_url), "0005_ledger")
    usdt = address_key(USDT_ETH)
    _insert(engine, invoice_id, "ethereum", EVM_TX, -1, "native")
    _insert(engine, invoice_id, "ethereum", EVM_TX, 7, usdt)  # block-wide index: position unknown offline
    _insert(engine, invoice_id, "tron", TRON_TX, 2, USDT_TRON)  # Tron counts logs within the transaction
    upgrade(db_url)
    with session_scope(engine) as s:
        rows = s.exec(select(Payment.network, Payment.log_index, Payment.tx_position).order_by(col(Payment.id))).all()
    assert [tuple(r) for r in rows] == [("ethereum", -1, -1), ("ethereum", 7, None), ("tron", 2, 2)]

    # The legacy token row is the same transfer when it is seen again, re-mined at another index.
    seen = Transfer(
        network="ethereum",
        tx_hash=EVM_TX,
        log_index=3,
        tx_position=1,
        block_number=12,
        block_hash="h12",
        block_time=T0 + timedelta(seconds=1),
        from_address="from",
        to_address="to",
        asset_key=usdt,
        amount=5,
    )
    ledger = Ledger(app_config.networks)
    with session_scope(engine) as s:
        ledger.record_matches(s, [Match(seen, invoice_id)], T0)
        ledger.record_matches(s, [Match(replace(seen, block_hash="h12b"), invoice_id)], T0)
    with session_scope(engine) as s:
        token = s.exec(select(Payment).where(Payment.asset_key == usdt)).all()
    assert [(p.log_index, p.tx_position, p.block_hash) for p in token] == [(3, 1, "h12b")]
