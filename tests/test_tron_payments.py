"""Tron deposits through the real scanner, the real database and the production adapter.

Only the node is local (tests/support/tron_node.py). Invoices are confirmed by the solidified height.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.chains.tron import TronAdapter
from paywatch.chains.tron_http import RetryPolicy
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.errors import RetryableChainError
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.scanner import Scanner, StepResult
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, ScannedBlock, UnmatchedTransfer
from paywatch.stores import create_store
from tests.conftest import TRON_XPUB
from tests.support.stored_rows import StoredRows
from tests.support.tron_node import (
    FAKE_USDT,
    USDT,
    StoredBlock,
    TronNode,
    address_of,
    block_time_of,
    trc20_transfer,
    tron_network,
    trx_transfer,
)

PAYER = address_of("payer")
TOKEN = 10**6  # USDT and TRX both have 6 decimals
POLICY = RetryPolicy(attempts=3, backoff=0.01, timeout=2.0)


class TronHarness(StoredRows):
    """One tron network, one store, the real Scanner; the clock follows the head block's time."""

    def __init__(self, engine: Engine, db_url: str, tmp_path: Path, node: TronNode, **network: Any) -> None:
        self.engine = engine
        self.node = node
        self.chain = node.chain
        self.network: NetworkConfig = tron_network(
            [node.url], xpub=TRON_XPUB, start_block=self.chain.head + 1, batch_blocks=5, **network
        )
        self.config = AppConfig(
            settings=Settings(database_url=db_url, networks=tmp_path / "networks.yaml"),
            networks={"tron": self.network},
        )
        self.ledger = Ledger(self.config.networks)
        self.adapter = TronAdapter(self.network, policy=POLICY)
        self.scanner = Scanner(self.network, self.adapter, engine, self.ledger, self.now)
        with session_scope(engine) as s:
            self.store = create_store(s, "shop", self.now()).store

    def now(self) -> datetime:
        head = self.chain.block(self.chain.head)
        assert head is not None
        return block_time_of(head) + timedelta(seconds=1)

    def invoice(self, asset: str, amount: str, **kw: Any) -> Invoice:
        with session_scope(self.engine) as s:
            return create_invoice(s, self.config, self.store, InvoiceRequest("tron", asset, amount, **kw), self.now())

    def scan(self) -> list[StepResult]:
        return self.scanner.run_until_caught_up(max_steps=100)

    def pay(self, *txs: Any, at: datetime | None = None) -> StoredBlock:
        return self.chain.mine(*txs, at=at)

    def solidify_all(self) -> None:
        self.chain.solidify(self.chain.head)

    def unmatched(self) -> list[UnmatchedTransfer]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(UnmatchedTransfer).order_by(col(UnmatchedTransfer.id))))

    def events(self, invoice_id: str) -> list[str]:
        with session_scope(self.engine) as s:
            return list(
                s.exec(
                    select(CallbackEvent.type)
                    .where(CallbackEvent.invoice_id == invoice_id)
                    .order_by(col(CallbackEvent.id))
                ).all()
            )

    def cursor(self) -> int | None:
        with session_scope(self.engine) as s:
            state = s.get(NetworkState, "tron")
            return None if state is None else state.cursor_height

    def scanned_numbers(self) -> list[int]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(ScannedBlock.number).order_by(col(ScannedBlock.number))).all())


@pytest.fixture
def node() -> Iterator[TronNode]:
    with TronNode() as n:
        yield n


@pytest.fixture
def h(engine: Engine, db_url: str, tmp_path: Path, node: TronNode) -> TronHarness:
    return TronHarness(engine, db_url, tmp_path, node)


def test_exact_usdt_and_trx_confirmed_by_solidification(h: TronHarness) -> None:
    usdt = h.invoice("USDT", "25")
    trx = h.invoice("TRX", "1.5")
    block = h.pay(trc20_transfer(USDT, PAYER, usdt.address, 25 * TOKEN), trx_transfer(PAYER, trx.address, 1_500_000))
    h.chain.mine_empty(3)
    h.chain.solidify(block.number - 1)
    h.scan()
    assert h.get(usdt.id).status == h.get(trx.id).status == "WAITING_FOR_CONFIRMATIONS"
    h.chain.solidify(block.number)  # at or below the solidified height: confirmed
    h.scan()
    for invoice, amount in ((usdt, 25 * TOKEN), (trx, 1_500_000)):
        got = h.get(invoice.id)
        assert (got.status, got.flags, got.amount_paid, got.amount_confirmed) == ("COMPLETED", [], amount, amount)
    [token_payment] = h.payments(usdt.id)
    [trx_payment] = h.payments(trx.id)
    assert (token_payment.asset_key, token_payment.log_index, token_payment.from_address) == (USDT, 0, PAYER)
    assert (trx_payment.asset_key, trx_payment.log_index, trx_payment.block_hash) == ("native", -1, block.id)
    assert h.events(usdt.id) == [
        "invoice.created",
        "invoice.payment_received",
        "invoice.waiting_for_confirmations",
        "invoice.completed",
    ]
    h.chain.mine_empty(2)
    h.scan()  # idempotent
    assert len(h.payments()) == 2


def test_partial_then_top_up(h: TronHarness) -> None:
    invoice = h.invoice("USDT", "10")
    h.pay(trc20_transfer(USDT, PAYER, invoice.address, 4 * TOKEN))
    h.solidify_all()
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.amount_paid) == ("PARTIAL", 4 * TOKEN)
    h.pay(trc20_transfer(USDT, PAYER, invoice.address, 6 * TOKEN))
    h.solidify_all()
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 10 * TOKEN, [])
    assert len(h.payments(invoice.id)) == 2


def test_overpaid(h: TronHarness) -> None:
    invoice = h.invoice("TRX", "2")
    h.pay(trx_transfer(PAYER, invoice.address, 5 * TOKEN))
    h.solidify_all()
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.flags, got.amount_paid) == ("COMPLETED", ["overpaid"], 5 * TOKEN)


def test_late_payment_judged_by_block_time(h: TronHarness) -> None:
    late = h.invoice("USDT", "5", expires_in=60)
    on_time = h.invoice("USDT", "5", expires_in=60)
    h.pay(trc20_transfer(USDT, PAYER, on_time.address, 5 * TOKEN), at=on_time.expires_at - timedelta(seconds=3))
    h.pay(trc20_transfer(USDT, PAYER, late.address, 5 * TOKEN), at=late.expires_at + timedelta(seconds=30))
    h.solidify_all()
    h.scan()  # the watcher scans after expiry; the first block is still inside the window
    assert h.get(on_time.id).status == "COMPLETED"
    got = h.get(late.id)
    assert got.status == "EXPIRED" and "paid_late" in got.flags
    [payment] = h.payments(late.id)
    assert payment.late
    assert "invoice.payment_late" in h.events(late.id)


def test_fake_token_and_failed_transactions_are_ignored(h: TronHarness) -> None:
    invoice = h.invoice("USDT", "5")
    h.pay(
        trc20_transfer(FAKE_USDT, PAYER, invoice.address, 5 * TOKEN),
        trc20_transfer(USDT, PAYER, invoice.address, 5 * TOKEN, result="REVERT"),
        trc20_transfer(USDT, PAYER, invoice.address, 5 * TOKEN, result="OUT_OF_ENERGY"),
        trc20_transfer(USDT, PAYER, invoice.address, 0),
    )
    h.solidify_all()
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.amount_paid) == ("PENDING", 0)
    assert h.payments() == [] and h.unmatched() == []


def test_fork_before_solidification_moves_the_payment_back_and_never_credits_twice(h: TronHarness) -> None:
    invoice = h.invoice("USDT", "8")
    payment = trc20_transfer(USDT, PAYER, invoice.address, 8 * TOKEN)
    block = h.pay(payment)
    h.chain.mine_empty(2)
    h.scan()
    assert h.get(invoice.id).status == "WAITING_FOR_CONFIRMATIONS"

    h.chain.fork(block.number, [], [], [], [])  # a longer branch without the payment wins before solidification
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.amount_paid) == ("PENDING", 0)
    [orphaned] = h.payments(invoice.id)
    assert orphaned.orphaned

    h.pay(payment)  # the same transaction makes it into the new chain
    h.solidify_all()
    h.scan()
    got = h.get(invoice.id)
    assert (got.status, got.amount_paid, got.amount_confirmed) == ("COMPLETED", 8 * TOKEN, 8 * TOKEN)
    [moved] = h.payments(invoice.id)
    assert not moved.orphaned and moved.block_number == h.chain.head and moved.id == orphaned.id


def test_memo_match_and_unknown_memo_goes_to_the_inbox(h: TronHarness) -> None:
    usdt = h.invoice("USDT", "12", match="memo")
    trx = h.invoice("TRX", "3", match="memo")
    assert usdt.address == trx.address and usdt.memo and trx.memo and usdt.memo != trx.memo
    shared = usdt.address
    h.pay(
        trc20_transfer(USDT, PAYER, shared, 12 * TOKEN, memo=usdt.memo),
        trx_transfer(PAYER, shared, 3 * TOKEN, memo=trx.memo),
        trc20_transfer(USDT, PAYER, shared, 7 * TOKEN, memo="NOSUCHMEMO"),
        trx_transfer(PAYER, shared, 1 * TOKEN),
    )
    h.solidify_all()
    h.scan()
    assert h.get(usdt.id).status == h.get(trx.id).status == "COMPLETED"
    assert [(p.memo, p.amount) for p in h.payments()] == [(usdt.memo, 12 * TOKEN), (trx.memo, 3 * TOKEN)]
    inbox = {(u.reason, u.memo, u.amount) for u in h.unmatched()}
    assert inbox == {("unknown_memo", "NOSUCHMEMO", 7 * TOKEN), ("no_memo", None, 1 * TOKEN)}


def test_rate_limited_then_success(h: TronHarness) -> None:
    invoice = h.invoice("USDT", "5")
    h.pay(trc20_transfer(USDT, PAYER, invoice.address, 5 * TOKEN))
    h.solidify_all()
    h.node.fail_next(POLICY.attempts, status=429, retry_after="0")
    with pytest.raises(RetryableChainError):
        h.scanner.step()
    assert h.cursor() is None
    h.node.fail_next(POLICY.attempts - 1, status=429, retry_after="0")  # retried within one call
    h.scan()
    assert h.get(invoice.id).status == "COMPLETED"


def test_node_down_then_back_skips_no_block(h: TronHarness) -> None:
    invoices = [h.invoice("USDT", "1") for _ in range(4)]
    h.pay(trc20_transfer(USDT, PAYER, invoices[0].address, TOKEN))
    h.scan()
    before = h.cursor()
    h.node.stop()
    for invoice in invoices[1:]:
        h.pay(trc20_transfer(USDT, PAYER, invoice.address, TOKEN))
        h.chain.mine_empty(3)
    with pytest.raises(RetryableChainError):
        h.scanner.step()
    assert h.cursor() == before
    h.node.start()
    # a failure in the middle of a range stores nothing of that range (blocks are read concurrently,
    # so every read of the infos after the first two fails until the faults are cleared)
    h.node.fail_next(10_000, status=503, path="wallet/gettransactioninfobyblocknum", after=2)
    with pytest.raises(RetryableChainError):
        h.scan()
    h.node.clear_faults()
    assert h.cursor() == before
    h.solidify_all()
    h.scan()
    assert h.cursor() == h.chain.head
    numbers = h.scanned_numbers()
    assert numbers == list(range(numbers[0], h.chain.head + 1))
    assert all(h.get(i.id).status == "COMPLETED" for i in invoices)


def test_blocks_on_top_do_not_confirm_what_is_not_solidified(h: TronHarness) -> None:
    invoice = h.invoice("TRX", "1")
    block = h.pay(trx_transfer(PAYER, invoice.address, TOKEN))
    h.chain.mine_empty(30)  # far past any confirmations count, but the solidity node lags
    h.chain.solidify(block.number - 1)
    h.scan()
    assert h.get(invoice.id).status == "WAITING_FOR_CONFIRMATIONS"


def test_confirmations_count_when_finality_is_not_used(
    engine: Engine, db_url: str, tmp_path: Path, node: TronNode
) -> None:
    h = TronHarness(engine, db_url, tmp_path, node, finality=None, confirmations=3)
    invoice = h.invoice("USDT", "2")
    h.pay(trc20_transfer(USDT, PAYER, invoice.address, 2 * TOKEN))
    h.chain.mine_empty(1)
    h.scan()
    assert h.get(invoice.id).status == "WAITING_FOR_CONFIRMATIONS"
    h.chain.mine_empty(1)  # the payment's block + 2 on top = 3 confirmations
    h.scan()
    assert h.get(invoice.id).status == "COMPLETED"
