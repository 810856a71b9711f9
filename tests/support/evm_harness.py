"""The real scanner on a real database against a real anvil node, with invoice helpers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.chains.base import ChainAdapter
from paywatch.chains.evm import EvmAdapter
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.scanner import Scanner, StepResult
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, NetworkState, ScannedBlock, UnmatchedTransfer
from paywatch.stores import create_store
from tests.support.evm_node import Chain
from tests.support.stored_rows import StoredRows


class Harness(StoredRows):
    """One network, one store, one scanner; the clock follows the chain's latest block time."""

    def __init__(
        self,
        engine: Engine,
        db_url: str,
        tmp_path: Path,
        chain: Chain,
        network: NetworkConfig,
        *,
        adapter: ChainAdapter | None = None,
        clock: Callable[[], datetime] | None = None,
        accept_late: bool = False,
        prefetch: bool = True,
    ) -> None:
        self.engine = engine
        self.chain = chain
        self.network = network
        self.payments_network = network.name  # payments() reads this network's only
        self.config = AppConfig(
            settings=Settings(database_url=db_url, networks=tmp_path / "networks.yaml"),
            networks={network.name: network},
        )
        self.ledger = Ledger(self.config.networks)
        self.adapter = adapter or EvmAdapter(network, sleep=lambda _s: None)
        self.clock = clock or chain.time
        self.scanner = Scanner(network, self.adapter, engine, self.ledger, self.clock, prefetch=prefetch)
        with session_scope(engine) as s:
            store = create_store(s, "shop", self.clock()).store
            store.accept_late_payments = accept_late
            s.add(store)
            self.store = store

    def invoice(self, asset: str, amount: str, **kw: Any) -> Invoice:
        with session_scope(self.engine) as s:
            return create_invoice(
                s, self.config, self.store, InvoiceRequest(self.network.name, asset, amount, **kw), self.clock()
            )

    def invoices(self, requests: list[tuple[str, str]]) -> list[Invoice]:
        """Many invoices in one transaction: (asset, amount) each."""
        now = self.clock()
        with session_scope(self.engine) as s:
            return [
                create_invoice(s, self.config, self.store, InvoiceRequest(self.network.name, asset, amount), now)
                for asset, amount in requests
            ]

    def scan(self) -> list[StepResult]:
        return self.scanner.run_until_caught_up(max_steps=1000)

    def unmatched(self) -> list[UnmatchedTransfer]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(UnmatchedTransfer).order_by(col(UnmatchedTransfer.id))))

    def state(self) -> NetworkState:
        with session_scope(self.engine) as s:
            state = s.get(NetworkState, self.network.name)
            assert state is not None
            return state

    def scanned_numbers(self) -> list[int]:
        with session_scope(self.engine) as s:
            return list(
                s.exec(
                    select(ScannedBlock.number)
                    .where(ScannedBlock.network == self.network.name)
                    .order_by(col(ScannedBlock.number))
                )
            )
