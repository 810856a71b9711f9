from datetime import timedelta

from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.stores import create_store
from tests.conftest import T0
from tests.support.chain_clock import scanned_until


def test_create_and_expire(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        inv = create_invoice(s, app_config, store, InvoiceRequest("ethereum", "USDT", "25.5", "00:01"), T0)
        assert inv.address == "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0"  # index 1 of "abandon...about"
        inv_id = inv.id
    scanned_until(engine, "ethereum", T0 + timedelta(seconds=61))  # expiry is judged by scanned block time
    with session_scope(engine) as s:
        assert Ledger(app_config.networks).expiry_sweep(s, T0 + timedelta(seconds=61)) == 1
    with session_scope(engine) as s:
        from paywatch.store.models import Invoice
        got = s.get(Invoice, inv_id)
        assert got is not None and got.status == "EXPIRED"
        assert got.amount == 25_500_000
