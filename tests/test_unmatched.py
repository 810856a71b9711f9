"""The unmatched inbox: listing and attaching, audited, re-evaluated, with callbacks."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason
from paywatch.domain.transfer import Transfer, address_key
from paywatch.errors import ConflictError
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.store.models import AuditLog, CallbackEvent, Invoice, NetworkState, Payment, Store, UnmatchedTransfer
from paywatch.stores import create_store
from paywatch.unmatched import attach, list_unmatched
from tests.conftest import T0, TEST_NETWORKS, USDT_TRON
from tests.support.cli import paywatch


def stray(to: str, amount: int, *, memo: str | None = "WRONGMEMO", index: int = 0) -> Transfer:
    return Transfer(
        network="tron",
        tx_hash=f"{index:064x}",
        log_index=0,
        block_number=100 + index,
        block_hash="ab" * 32,
        block_time=T0,
        from_address="TXYZ",
        to_address=to,
        asset_key=address_key(USDT_TRON),
        amount=amount,
        memo=memo,
    )


def setup(engine: Engine, config: AppConfig) -> tuple[str, int, Ledger]:
    ledger = Ledger(config.networks)
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        invoice = create_invoice(s, config, store, InvoiceRequest("tron", "USDT", "5", match="memo"), T0)
        s.add(NetworkState(network="tron", tip_height=200, final_height=200, cursor_height=200, last_scan_at=T0))
        ledger.record_unmatched(s, [Unmatched(stray(invoice.address, 5_000_000), UnmatchedReason.UNKNOWN_MEMO)], T0)
        row = s.exec(select(UnmatchedTransfer)).one()
        assert row.id is not None
        return invoice.id, row.id, ledger


def test_attach_credits_audits_and_fires_callbacks(engine: Engine, app_config: AppConfig) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config)
    with session_scope(engine) as s:
        assert [r.id for r in list_unmatched(s)] == [transfer_id]
        attach(s, ledger, transfer_id, invoice_id, T0, actor="test")
    with session_scope(engine) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "COMPLETED" and invoice.amount_paid == 5_000_000
        assert len(s.exec(select(Payment)).all()) == 1
        assert list_unmatched(s) == [] and len(list_unmatched(s, include_attached=True)) == 1
        types = [e.type for e in s.exec(select(CallbackEvent).where(CallbackEvent.invoice_id == invoice_id))]
        assert types[-2:] == ["invoice.payment_received", "invoice.completed"]
        [audit] = s.exec(select(AuditLog).where(AuditLog.action == "unmatched.attach")).all()
        assert audit.actor == "test" and audit.details["transfer_id"] == transfer_id
    with session_scope(engine) as s, pytest.raises(ConflictError, match="already attached"):
        attach(s, ledger, transfer_id, invoice_id, T0, actor="test")


def test_attach_refuses_other_assets_and_orphans(engine: Engine, app_config: AppConfig) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config)
    with session_scope(engine) as s:
        store_id = s.exec(select(Invoice.store_id)).one()
        store = s.exec(select(Store)).one()
        assert store.id == store_id
        trx = create_invoice(s, app_config, store, InvoiceRequest("tron", "TRX", "5"), T0)
        trx_id = trx.id
    with session_scope(engine) as s, pytest.raises(ConflictError, match="another asset"):
        attach(s, ledger, transfer_id, trx_id, T0, actor="test")
    with session_scope(engine) as s:
        ledger.orphan_from(s, "tron", 0, T0)
    with session_scope(engine) as s, pytest.raises(ConflictError, match="reorg"):
        attach(s, ledger, transfer_id, invoice_id, T0, actor="test")


@pytest.mark.slow
def test_cli_lists_and_attaches(db_url: str, engine: Engine, app_config: AppConfig, tmp_path: Path) -> None:
    invoice_id, transfer_id, _ = setup(engine, app_config)
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {**os.environ, "PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks)}

    listed = json.loads(paywatch(["unmatched", "list", "--json"], env).stdout)
    assert [(r["id"], r["reason"], r["amount_units"]) for r in listed] == [(transfer_id, "unknown_memo", "5000000")]
    attached = paywatch(["unmatched", "attach", str(transfer_id), invoice_id], env, process=True)  # a real process
    assert attached.returncode == 0 and "COMPLETED" in attached.stdout, attached.stderr
    again = paywatch(["unmatched", "attach", str(transfer_id), invoice_id], env)
    assert again.returncode == 2 and "already attached" in again.stderr


def test_an_attached_transfer_reorged_out_and_remined_is_credited_again(engine: Engine, app_config: AppConfig) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config)
    with session_scope(engine) as s:
        address = s.exec(select(Invoice.address)).one()
        attach(s, ledger, transfer_id, invoice_id, T0, actor="test")
    with session_scope(engine) as s:
        ledger.orphan_from(s, "tron", 0, T0)  # the transfer's block is reorged out
    with session_scope(engine) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and (invoice.amount_paid, invoice.flags) == (0, ["reverted"])
    remined = replace(stray(address, 5_000_000), block_number=150, block_hash="cd" * 32)
    with session_scope(engine) as s:  # the scanner finds it again; it still matches no invoice
        ledger.record_unmatched(s, [Unmatched(remined, UnmatchedReason.UNKNOWN_MEMO)], T0)
    with session_scope(engine) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        assert (invoice.status, invoice.amount_paid, invoice.flags) == ("COMPLETED", 5_000_000, [])
        [payment] = s.exec(select(Payment)).all()
        assert (payment.orphaned, payment.block_number) == (False, 150)
        row = s.get(UnmatchedTransfer, transfer_id)
        assert row is not None and not row.orphaned and row.attached_invoice_id == invoice_id
        assert list_unmatched(s) == []  # still attached: credited once, not offered again
        query = select(CallbackEvent).where(CallbackEvent.invoice_id == invoice_id).order_by(col(CallbackEvent.id))
        events = s.exec(query).all()
        assert [e.type for e in events][-2:] == ["invoice.payment_reverted", "invoice.payment_restored"]
        assert events[-1].status_version == invoice.status_version


def test_an_attached_transfer_remined_that_now_matches_another_invoice_stays_with_its_own(
    engine: Engine, app_config: AppConfig
) -> None:
    invoice_id, transfer_id, ledger = setup(engine, app_config)
    with session_scope(engine) as s:
        own = s.get(Invoice, invoice_id)
        store = s.exec(select(Store)).one()
        assert own is not None
        other_id = create_invoice(s, app_config, store, InvoiceRequest("tron", "USDT", "5", match="memo"), T0).id
        address = own.address
        attach(s, ledger, transfer_id, invoice_id, T0, actor="test")
    with session_scope(engine) as s:
        ledger.orphan_from(s, "tron", 0, T0)
    remined = replace(stray(address, 5_000_000), block_number=150, block_hash="cd" * 32)
    with session_scope(engine) as s:
        assert ledger.record_matches(s, [Match(remined, other_id)], T0) == {invoice_id}
    with session_scope(engine) as s:
        [payment] = s.exec(select(Payment)).all()
        assert (payment.invoice_id, payment.orphaned, payment.block_number) == (invoice_id, False, 150)
        row = s.get(UnmatchedTransfer, transfer_id)
        assert row is not None and (row.orphaned, row.block_number, row.attached_invoice_id) == (False, 150, invoice_id)
        other = s.get(Invoice, other_id)
        assert other is not None and other.amount_paid == 0


def test_cli_inbox_reads_in_asset_units_in_80_columns(
    db_url: str, engine: Engine, app_config: AppConfig, tmp_path: Path
) -> None:
    _, transfer_id, ledger = setup(engine, app_config)
    eth_tx = "0x" + "3e" * 32
    eth = Transfer(
        network="ethereum",
        tx_hash=eth_tx,
        log_index=-1,
        block_number=7,
        block_hash="cd" * 32,
        block_time=T0,
        from_address="0x" + "11" * 20,
        to_address="0x" + "22" * 20,
        asset_key="native",
        amount=3_041_416_671_280_614_839,
    )
    with session_scope(engine) as s:
        ledger.record_unmatched(s, [Unmatched(eth, UnmatchedReason.ASSET_MISMATCH)], T0)
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {**os.environ, "PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks), "COLUMNS": "80"}

    def inbox(*args: str) -> str:
        done = paywatch(["unmatched", "list", *args], env)  # the real app, in this process
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = inbox()
    assert "ETH 3.041416671280614839" in table and "USDT 5" in table
    assert "native" not in table and USDT_TRON not in table and "3041416671280614839" not in table
    assert "0x3e3e…3e3e" in table and eth_tx not in table  # a short tx hash
    assert "unknown memo" in table and "asset mismatch" in table
    assert max(len(line) for line in table.splitlines()) <= 80

    wide = inbox("--wide")
    assert eth_tx in wide and "3041416671280614839" in wide and "ETH 3.041416671280614839" in wide

    rows = {r["id"]: r for r in json.loads(inbox("--json"))}
    usdt = rows[transfer_id]
    assert (usdt["asset"], usdt["amount"], usdt["amount_units"]) == ("USDT", "5", "5000000")
    assert usdt["asset_key"] == USDT_TRON.lower() or usdt["asset_key"] == address_key(USDT_TRON)
    (ether,) = [r for r in rows.values() if r["tx_hash"] == eth_tx]
    assert (ether["asset"], ether["amount"], ether["amount_units"]) == ("ETH", "3.041416671280614839", str(eth.amount))
    assert ether["asset_key"] == "native"
