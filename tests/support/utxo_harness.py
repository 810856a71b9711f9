"""The real scanner on a real database against a real regtest litecoind, with invoice helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.chains.utxo import UtxoAdapter
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.scanner import Scanner, StepResult
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, Invoice, Payment, ScannedBlock, UnmatchedTransfer
from paywatch.stores import create_store
from paywatch.views import payment_view
from tests.support.ltc_node import LtcNode, ltc_network
from tests.support.stored_rows import StoredRows

SAT = 100_000_000


class UtxoHarness(StoredRows):
    """One litecoin regtest network, one store, the real Scanner; the clock follows the tip's time."""

    def __init__(
        self, engine: Engine, db_url: str, tmp_path: Path, node: LtcNode, *, prefetch: bool = True, **network: Any
    ) -> None:
        self.engine = engine
        self.node = node
        self._now = datetime.now(UTC)
        if node.rpc("getrawmempool"):  # the addresses repeat across tests (one key, fresh databases)
            node.mine(1)
        node.mine(1)  # empty: the pool is (generateblock fails once MWEB is active)
        network.setdefault("start_block", node.height)  # an empty block: the cursor exists from the first step
        self.network: NetworkConfig = ltc_network(node, **network)
        self.config = AppConfig(
            settings=Settings(database_url=db_url, networks=tmp_path / "networks.yaml"),
            networks={self.network.name: self.network},
        )
        self.ledger = Ledger(self.config.networks)
        self.adapter = UtxoAdapter(self.network, sleep=lambda _s: None, attempts=2, timeout=30)
        self.scanner = Scanner(self.network, self.adapter, engine, self.ledger, self.now, prefetch=prefetch)
        with session_scope(engine) as s:
            self.store = create_store(s, "shop", self.now()).store

    def close(self) -> None:
        self.scanner.close()

    def now(self) -> datetime:
        """The tip's time plus a second (the last one read while the node is stopped)."""
        if self.node.proc is not None:
            tip = self.node.rpc("getblockheader", self.node.rpc("getbestblockhash"))
            self._now = datetime.fromtimestamp(int(tip["time"]), UTC) + timedelta(seconds=1)
        return self._now

    def invoice(self, amount: str, **kw: Any) -> Invoice:
        with session_scope(self.engine) as s:
            return create_invoice(s, self.config, self.store, InvoiceRequest("ltc", "LTC", amount, **kw), self.now())

    def invoices(self, amounts: list[str]) -> list[Invoice]:
        now = self.now()
        with session_scope(self.engine) as s:
            return [create_invoice(s, self.config, self.store, InvoiceRequest("ltc", "LTC", a), now) for a in amounts]

    def scan(self) -> list[StepResult]:
        return self.scanner.run_until_caught_up(max_steps=10_000)

    def views(self, invoice_id: str) -> list[dict[str, Any]]:
        """The invoice's payments as the API shows them (heights as last stored)."""
        from paywatch.policy import stored_heights

        with session_scope(self.engine) as s:
            invoice = s.get(Invoice, invoice_id)
            assert invoice is not None
            heights = stored_heights(s, "ltc", uses_finality=False)
            payments = list(s.exec(select(Payment).where(Payment.invoice_id == invoice_id).order_by(col(Payment.id))))
            return [payment_view(p, invoice, heights, self.network) for p in payments]

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

    def scanned_numbers(self) -> list[int]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(ScannedBlock.number).order_by(col(ScannedBlock.number))).all())
