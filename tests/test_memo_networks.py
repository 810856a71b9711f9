"""The memo strategy exists only where transfers carry a memo (Tron); EVM refuses it (issue 9.8)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig, parse_networks, raw_document
from paywatch.errors import ConfigError, InputError
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice
from paywatch.stores import create_store
from tests.conftest import T0, TEST_NETWORKS
from tests.support.api_helpers import make_api
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)


def test_api_refuses_memo_on_evm_naming_match(engine: Engine, app_config: AppConfig) -> None:
    api = make_api(engine, app_config)
    body = {"network": "ethereum", "asset": "USDT", "amount": "5", "match": "memo"}
    response = api.client.post("/v1/invoices", json=body, headers=api.headers())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "match" and "memo" in error["message"] and "ethereum" in error["message"]
    with session_scope(engine) as s:
        assert s.exec(select(Invoice)).all() == []  # nothing written, no address taken
    tron = {**body, "network": "tron"}
    assert api.client.post("/v1/invoices", json=tron, headers=api.headers()).status_code == 201


def test_service_refuses_memo_on_evm(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as s:
        store = create_store(s, "shop", T0).store
        with pytest.raises(InputError, match="memo") as caught:
            create_invoice(s, app_config, store, InvoiceRequest("ethereum", "ETH", "1", match="memo"), T0)
    assert caught.value.field == "match"


def _with_default_match(network: str, value: str) -> str:
    document: dict[str, Any] = yaml.safe_load(TEST_NETWORKS)
    document["networks"][network]["default_match"] = value
    return raw_document(document)


def test_config_refuses_default_memo_on_evm() -> None:
    with pytest.raises(ConfigError, match=r"conf\.yaml: networks\.ethereum\.default_match: .*memo"):
        parse_networks(_with_default_match("ethereum", "memo"), source="conf.yaml", env={})
    tron = parse_networks(_with_default_match("tron", "memo"), source="conf.yaml", env={})
    assert tron["tron"].default_match == "memo"
