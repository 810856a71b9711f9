"""Storage: exact amounts up to 2**256-1, aware UTC datetimes, migrations that match the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from paywatch.config import AppConfig
from paywatch.domain.amounts import format_amount
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import Invoice, Payment
from paywatch.stores import create_store
from tests.conftest import T0
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)

MAX = 2**256 - 1


def _invoice(engine: Engine, app_config: AppConfig, amount: str = "1") -> str:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        return create_invoice(s, app_config, store, InvoiceRequest("ethereum", "ETH", amount, "01:00"), T0).id


def _payment(invoice_id: str, amount: int, n: int = 0, block_time: datetime = T0) -> Payment:
    return Payment(
        invoice_id=invoice_id,
        network="ethereum",
        tx_hash=f"0x{n:064x}",
        log_index=-1,
        tx_position=-1,
        from_address="0x" + "11" * 20,
        to_address="0x" + "22" * 20,
        asset_key="native",
        amount=amount,
        block_number=1,
        block_hash="0x" + "33" * 32,
        block_time=block_time,
        created_at=T0,
        updated_at=T0,
    )


def test_uint256_max_round_trips_invoice_and_payment(engine: Engine, app_config: AppConfig) -> None:
    inv_id = _invoice(engine, app_config, format_amount(MAX, 18))  # MAX wei, through the API parser
    with session_scope(engine) as s:
        inv = s.get(Invoice, inv_id)
        assert inv is not None
        inv.amount, inv.amount_paid, inv.amount_confirmed = MAX, MAX - 1, 1
        s.add(inv)
        s.add(_payment(inv_id, MAX))
    engine.dispose()  # nothing cached: read back through a new connection
    with Session(engine) as s:
        inv = s.get(Invoice, inv_id)
        assert inv is not None
        assert (inv.amount, inv.amount_paid, inv.amount_confirmed) == (MAX, MAX - 1, 1)
        assert type(inv.amount) is int
        pay = s.exec(select(Payment)).one()
        assert pay.amount == MAX and type(pay.amount) is int


def test_amount_order_and_comparison_are_numeric(engine: Engine, app_config: AppConfig) -> None:
    """SQL comparisons on amounts follow numeric order on every backend (SQLite stores text)."""
    inv_id = _invoice(engine, app_config)
    values = [9, 10, 99, 100, 10**18, 10**18 + 1, 2**64, MAX - 1, MAX]
    with session_scope(engine) as s:
        for n, v in enumerate(reversed(values)):
            s.add(_payment(inv_id, v, n))
    with Session(engine) as s:
        ordered = s.exec(select(Payment.amount).order_by(col(Payment.amount))).all()
        assert list(ordered) == values
        above = s.exec(select(Payment.amount).where(col(Payment.amount) > 10)).all()
        assert sorted(above) == [v for v in values if v > 10]
        between = s.exec(select(Payment.amount).where(col(Payment.amount) >= 99, col(Payment.amount) <= 10**18)).all()
        assert sorted(between) == [99, 100, 10**18]


@pytest.mark.parametrize("bad", [-1, 10**78, 1.5, True], ids=["negative", "79-digits", "float", "bool"])
def test_invalid_amounts_refused(engine: Engine, app_config: AppConfig, bad: object) -> None:
    inv_id = _invoice(engine, app_config)
    with pytest.raises(Exception, match="amount") as info, session_scope(engine) as s:
        s.add(_payment(inv_id, bad))  # type: ignore[arg-type]
        s.flush()
    assert isinstance(info.value.__cause__ or info.value, (TypeError, ValueError))


def test_datetimes_come_back_aware_utc(engine: Engine, app_config: AppConfig) -> None:
    inv_id = _invoice(engine, app_config)
    plus5 = timezone(timedelta(hours=5))
    local = datetime(2026, 6, 1, 17, 30, 15, 123456, tzinfo=plus5)
    with session_scope(engine) as s:
        s.add(_payment(inv_id, 1, block_time=local))
    engine.dispose()
    with Session(engine) as s:
        pay = s.exec(select(Payment)).one()
        assert pay.block_time == local
        assert pay.block_time.tzinfo is UTC or pay.block_time.utcoffset() == timedelta(0)
        assert pay.block_time.hour == 12 and pay.block_time.microsecond == 123456
        inv = s.get(Invoice, inv_id)
        assert inv is not None
        assert inv.expires_at == T0 + timedelta(hours=1)
        assert inv.expires_at.utcoffset() == timedelta(0)
        # the comparison the expiry sweep relies on happens in SQL
        due = s.exec(select(Invoice.id).where(col(Invoice.expires_at) <= datetime(2026, 1, 1, 18, 0, tzinfo=plus5)))
        assert list(due) == [inv_id]


def test_naive_datetime_refused(engine: Engine, app_config: AppConfig) -> None:
    inv_id = _invoice(engine, app_config)
    with pytest.raises(Exception, match="timezone-aware"), session_scope(engine) as s:
        s.add(_payment(inv_id, 1, block_time=datetime(2026, 1, 1)))
        s.flush()


def test_payment_unique_per_transfer(engine: Engine, app_config: AppConfig) -> None:
    inv_id = _invoice(engine, app_config)
    with session_scope(engine) as s:
        s.add(_payment(inv_id, 5, 1))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"), session_scope(engine) as s:
        s.add(_payment(inv_id, 6, 1))
        s.flush()


def test_migrations_match_models(engine: Engine) -> None:
    """`alembic check`: the migrated schema (fixtures run upgrade from empty) has no drift from the models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
        assert diff == []
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version is not None
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/wal.db")
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    eng.dispose()


def test_block_heights_beyond_32_bits_round_trip(engine: Engine) -> None:
    """Block numbers and heights are 64-bit on every backend (PostgreSQL INTEGER stops at 2**31-1)."""
    from paywatch.store.models import NetworkState, ScannedBlock

    height = 2**40 + 7
    with session_scope(engine) as session:
        session.add(NetworkState(network="big", cursor_height=height, tip_height=height + 1, final_height=height))
        session.add(ScannedBlock(network="big", number=height, hash="0xa", parent_hash="0x9", timestamp=T0))
    with session_scope(engine) as session:
        state = session.get(NetworkState, "big")
        assert state is not None and (state.cursor_height, state.tip_height) == (height, height + 1)
        assert session.get(ScannedBlock, ("big", height)) is not None
