"""Reads of what the ledger stored, shared by the chain harnesses (EVM, Tron, UTXO)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, Payment


class StoredRows:
    """Mixin for a harness holding ``engine``; ``payments_network`` narrows :meth:`payments`."""

    engine: Engine
    payments_network: str | None = None

    def get(self, invoice_id: str) -> Invoice:
        with session_scope(self.engine) as s:
            invoice = s.get(Invoice, invoice_id)
            assert invoice is not None
            return invoice

    def payments(self, invoice_id: str | None = None) -> list[Payment]:
        with session_scope(self.engine) as s:
            query = select(Payment)
            if self.payments_network is not None:
                query = query.where(Payment.network == self.payments_network)
            if invoice_id is not None:
                query = query.where(Payment.invoice_id == invoice_id)
            return list(s.exec(query.order_by(col(Payment.id))))
