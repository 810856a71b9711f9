"""Issue 10, finding 5: one store capturing another store's payments on a shared address."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from paywatch.domain.matching import Unmatched, UnmatchedReason
from paywatch.errors import ConflictError
from paywatch.keys import derive_address
from tests.conftest import EVM_XPUB
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)
from tests.test_store_addresses import CONFIGURED_SHARED, _config, _invoice, _match, _pay, _store

pytestmark = pytest.mark.attack("abuse")


def test_a_round_payment_to_one_store_is_not_captured_by_another(engine: Engine, db_url: str) -> None:
    """Store A asked 24.999999 and was issued exactly 25; store B's customer paying a round 25 credited A."""
    config = _config(db_url)
    a, b = _store(engine, "a"), _store(engine, "b")
    a_inv = _invoice(engine, config, a, "ethereum", "USDT", "24.999999", "amount")
    b_inv = _invoice(engine, config, b, "ethereum", "USDT", "25", "amount")
    assert a_inv.amount == 25_000_000
    result = _match(engine, config, _pay(config, "ethereum", b_inv.address, 25_000_000))
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.NO_AMOUNT_MATCH


def test_a_memo_invoice_paid_without_its_memo_is_not_matched_by_amount(engine: Engine, db_url: str) -> None:
    config = _config(db_url)
    store = _store(engine)
    memo_inv = _invoice(engine, config, store, "tron", "USDT", "25", "memo")
    amount_inv = _invoice(engine, config, store, "tron", "USDT", "25", "amount")
    result = _match(engine, config, _pay(config, "tron", memo_inv.address, amount_inv.amount))
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.NO_MEMO
    carrying = _pay(config, "tron", amount_inv.address, amount_inv.amount, memo="HELLO")
    result = _match(engine, config, carrying)
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.UNKNOWN_MEMO


def test_open_unique_amount_invoices_per_store_are_capped(engine: Engine, db_url: str) -> None:
    """One store could fill every free offset of an amount and lock everyone else out."""
    config = _config(db_url, max_open_amount_invoices=3)
    a, b = _store(engine, "a"), _store(engine, "b")
    for _ in range(3):
        _invoice(engine, config, a, "ethereum", "USDT", "5", "amount")
    with pytest.raises(ConflictError) as info:
        _invoice(engine, config, a, "ethereum", "USDT", "6", "amount")
    assert info.value.status_code == 409 and info.value.field == "match"
    assert "3" in str(info.value)
    _invoice(engine, config, a, "ethereum", "USDT", "5", "address")  # other strategies are not capped
    _invoice(engine, config, b, "ethereum", "USDT", "5", "amount")  # nor other stores


def test_a_configured_deposit_address_belongs_to_one_store(engine: Engine, db_url: str) -> None:
    config = _config(db_url, CONFIGURED_SHARED)
    first, second = _store(engine, "first"), _store(engine, "second")
    one = _invoice(engine, config, first, "tron", "USDT", "5", "memo")
    two = _invoice(engine, config, first, "tron", "USDT", "5", "amount")
    assert one.address == two.address == "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
    with pytest.raises(ConflictError) as info:  # no xpub: nothing else to give the second store
        _invoice(engine, config, second, "tron", "USDT", "5", "memo")
    assert info.value.field == "match" and "xpub" in str(info.value)
    own = _invoice(engine, config, first, "ethereum", "USDT", "5", "amount")
    other = _invoice(engine, config, second, "ethereum", "USDT", "5", "amount")
    assert own.address == "0x1111111111111111111111111111111111111111"
    assert other.address == derive_address(EVM_XPUB, "evm", 1)


def test_the_cap_is_a_409_naming_match_through_the_api(engine: Engine, db_url: str) -> None:
    from tests.support.api_helpers import make_api

    api = make_api(engine, _config(db_url, max_open_amount_invoices=1))
    body = {"network": "ethereum", "asset": "USDT", "amount": "5", "match": "amount"}
    assert api.client.post("/v1/invoices", json=body, headers=api.headers()).status_code == 201
    refused = api.client.post("/v1/invoices", json=body, headers=api.headers())
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("too_many_open_amount_invoices", "match")
