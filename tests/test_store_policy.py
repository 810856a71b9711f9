"""Store policy (issue 9.11): underpaid tolerance, late window and late acceptance can be set through
``GET``/``PATCH /v1/store`` and ``paywatch store update``; a change reaches a running scanner without a
restart, and tolerance and late acceptance work end to end on a real node."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig
from paywatch.store.db import session_scope
from paywatch.store.models import AuditLog, Store
from paywatch.stores import update_store
from tests.conftest import TEST_NETWORKS
from tests.support.api_helpers import Api, make_api
from tests.support.cli import paywatch
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401

USDT = 10**6


@pytest.fixture
def api(engine: Engine, app_config: AppConfig) -> Api:
    return make_api(engine, app_config)


def store_row(engine: Engine, store_id: str) -> Store:
    with session_scope(engine) as s:
        store = s.get(Store, store_id)
        assert store is not None
        return store


# --- API ------------------------------------------------------------------------------------------


def test_get_and_patch_the_store_policy(api: Api) -> None:
    got = api.client.get("/v1/store", headers=api.headers())
    assert got.status_code == 200, got.text
    assert got.json() == {
        "id": api.store_id,
        "name": "shop",
        "underpaid_tolerance": "0",
        "accept_late_payments": False,
        "late_window": 7 * 86400,
        "callback_url": None,
    }
    body = {
        "underpaid_tolerance": "0.5%",
        "accept_late_payments": True,
        "late_window": "24h",
        "callback_url": "https://merchant.example/hooks",
    }
    patched = api.client.patch("/v1/store", json=body, headers=api.headers())
    assert patched.status_code == 200, patched.text
    expected = {**got.json(), **body, "underpaid_tolerance": "0.005", "late_window": 86400}
    assert patched.json() == expected
    assert api.client.get("/v1/store", headers=api.headers()).json() == expected
    store = store_row(api.engine, api.store_id)
    assert (store.underpaid_tolerance, store.accept_late_payments, store.late_window_seconds) == ("0.005", True, 86400)
    assert store.policy_version == 1
    # partial update: only what is sent changes; a fraction is accepted too; null removes the URL
    again = api.client.patch(
        "/v1/store", json={"underpaid_tolerance": "0.01", "callback_url": None}, headers=api.headers()
    ).json()
    assert (again["underpaid_tolerance"], again["late_window"], again["callback_url"]) == ("0.01", 86400, None)
    with session_scope(api.engine) as s:
        actions = s.exec(select(AuditLog.action).where(AuditLog.subject == api.store_id)).all()
    assert actions == ["store.update", "store.update"]


def test_store_routes_need_the_store_key(api: Api) -> None:
    assert api.client.get("/v1/store").status_code == 401
    refused = api.client.patch("/v1/store", json={"accept_late_payments": True}, headers={"X-Api-Key": "pw_nope"})
    assert refused.status_code == 401
    assert store_row(api.engine, api.store_id).accept_late_payments is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("underpaid_tolerance", "abc"),
        ("underpaid_tolerance", "100%"),
        ("underpaid_tolerance", "1"),
        ("underpaid_tolerance", "-0.1"),
        ("underpaid_tolerance", 0.005),
        ("underpaid_tolerance", None),
        ("underpaid_tolerance", "0.123456789"),
        ("late_window", "forever"),
        ("late_window", -5),
        ("late_window", "91d"),
        ("late_window", True),
        ("late_window", 1.5),
        ("accept_late_payments", "yes"),
        ("accept_late_payments", None),
        ("callback_url", "ftp://merchant.example/"),
        ("callback_url", "http://127.0.0.1:9/hook"),
        ("callback_url", "https://merchant.example/\x00"),
        ("callback_url", "https://merchant.example/" + "a" * 2100),
        ("late_window", "1d" * 5000),
        ("late_window", "9" * 40),
        ("underpaid_tolerance", "0.5%\x00"),
        ("colour", "red"),
    ],
)
def test_bad_patch_is_a_422_naming_the_field_and_changes_nothing(api: Api, field: str, value: Any) -> None:
    body = {"accept_late_payments": True, field: value} if field != "accept_late_payments" else {field: value}
    response = api.client.patch("/v1/store", json=body, headers=api.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    store = store_row(api.engine, api.store_id)
    assert (store.accept_late_payments, store.policy_version, store.callback_url) == (False, 0, None)


def test_patch_body_must_be_an_object(api: Api) -> None:
    response = api.client.patch("/v1/store", json=["underpaid_tolerance"], headers=api.headers())
    assert response.status_code == 422


# --- CLI ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_store_update(db_url: str, engine: Engine, tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {**os.environ, "PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks)}

    created = paywatch(["store", "create", "shop", "--json"], env)
    store_id = json.loads(created.stdout)["store_id"]
    args = ["store", "update", store_id, "--underpaid-tolerance", "0.5%", "--late-window", "24h", "--accept-late"]
    changed = paywatch([*args, "--json"], env, process=True)  # the operator's real process; the rest in-process
    assert changed.returncode == 0, changed.stderr
    view = json.loads(changed.stdout)
    assert (view["underpaid_tolerance"], view["late_window"], view["accept_late_payments"]) == ("0.005", 86400, True)
    off = paywatch(["store", "update", store_id, "--no-accept-late"], env)
    assert off.returncode == 0 and "accept_late_payments" in off.stdout, off.stderr
    store = store_row(engine, store_id)
    assert (store.underpaid_tolerance, store.late_window_seconds, store.accept_late_payments) == ("0.005", 86400, False)
    bad = paywatch(["store", "update", store_id, "--late-window", "soon"], env)
    assert bad.returncode == 2 and "late_window" in bad.stderr
    missing = paywatch(["store", "update", "st_nope", "--accept-late"], env)
    assert missing.returncode == 2 and "st_nope" in missing.stderr


# --- a running scanner on anvil -------------------------------------------------------------------


def set_policy(h: Harness, **changes: Any) -> None:
    with session_scope(h.engine) as s:
        store = s.get(Store, h.store.id)
        assert store is not None
        update_store(s, store, h.clock(), actor="test", allow_private_callbacks=False, **changes)


@pytest.mark.anvil
def test_a_shorter_late_window_reaches_the_running_scanner(h: Harness, deployed: Deployed) -> None:
    inv = h.invoice("USDT", "5", expires_in=60)
    h.scan()  # the scanner has built its watch index with the default 7-day late window
    set_policy(h, late_window="0")
    h.chain.next_timestamp(inv.expires_at + timedelta(seconds=30))
    h.chain.token_transfer(deployed.usdt, inv.address, 5 * USDT)
    h.scan()  # same scanner, no restart
    assert h.payments(inv.id) == []
    [row] = h.unmatched()
    assert (row.reason, row.hint_invoice_id) == ("expired_beyond_late_window", inv.id)


@pytest.mark.anvil
def test_late_acceptance_switched_on_while_scanning_counts_the_next_late_payment(
    h: Harness, deployed: Deployed
) -> None:
    inv = h.invoice("USDT", "5", expires_in=60)
    h.scan()
    set_policy(h, accept_late_payments=True, late_window="1h")
    h.chain.next_timestamp(inv.expires_at + timedelta(seconds=30))
    h.chain.token_transfer(deployed.usdt, inv.address, 5 * USDT)
    h.chain.mine(3)
    h.scan()
    got = h.get(inv.id)
    assert (got.status, got.amount_paid, got.flags) == ("COMPLETED", 5 * USDT, ["paid_late"])


@pytest.mark.anvil
def test_underpaid_tolerance_settles_within_it_and_not_beyond(h: Harness, deployed: Deployed) -> None:
    inside = h.invoice("USDT", "100")
    outside = h.invoice("USDT", "100")
    h.scan()
    set_policy(h, underpaid_tolerance="0.5%")
    h.chain.token_transfer(deployed.usdt, inside.address, 99_500_000)  # exactly 0.5 % short
    h.chain.token_transfer(deployed.usdt, outside.address, 99_499_999)  # one unit more short
    h.chain.mine(3)
    h.scan()
    a, b = h.get(inside.id), h.get(outside.id)
    assert (a.status, a.amount_paid, a.flags) == ("COMPLETED", 99_500_000, [])
    assert (b.status, b.amount_paid) == ("PARTIAL", 99_499_999)
    set_policy(h, underpaid_tolerance="0")  # back to exact: the next payment is judged by it
    h.chain.token_transfer(deployed.usdt, outside.address, 1)
    h.chain.mine(3)
    h.scan()
    assert h.get(outside.id).status == "PARTIAL"
