"""Callback admin through the real API app and the real CLI (typer's CliRunner)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.cli import app as cli_app
from paywatch.config import AppConfig
from paywatch.store.db import session_scope
from paywatch.store.models import AuditLog, CallbackEvent, Store
from tests.conftest import TEST_NETWORKS
from tests.support.api_helpers import Api, add_store, make_api
from tests.support.callback_receiver import FakeClock, Receiver, Reply, events_of, seed_store, verify


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _point_store(engine: Engine, store_id: str, url: str) -> None:
    with session_scope(engine) as s:
        store = s.get(Store, store_id)
        assert store is not None
        store.callback_url = url
        s.add(store)


async def test_api_lists_callbacks_with_their_attempts(
    engine: Engine, app_config: AppConfig, receiver: Receiver
) -> None:
    api = make_api(engine, app_config)
    _point_store(engine, api.store_id, receiver.url("/api"))
    created = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "5"}, headers=api.headers()
    )
    assert created.status_code == 201
    invoice_id = created.json()["id"]
    receiver.plan("/api", Reply(503, b"busy", headers={"Retry-After": "30"}))
    clock = FakeClock(api.clock())
    private_ok = app_config.settings.model_copy(update={"allow_private_callbacks": True})
    d = Dispatcher(engine, private_ok, clock, rng=random.Random(3))
    assert await d.run_once() == 1
    clock.advance(seconds=30)
    assert await d.run_once() == 1
    await d.aclose()

    got = api.client.get(f"/v1/invoices/{invoice_id}/callbacks", headers=api.headers())
    assert got.status_code == 200
    (delivery,) = got.json()["data"]
    assert delivery["type"] == "invoice.created" and delivery["state"] == "delivered"
    assert delivery["attempt_count"] == 2 and delivery["webhook_id"].startswith("msg_")
    first, second = delivery["attempts"]
    assert first["status_code"] == 503 and first["response_excerpt"] == "busy" and first["error"] == "HTTP 503"
    assert second["status_code"] == 200 and second["url"] == receiver.url("/api")
    assert first["at"].endswith("Z") and isinstance(first["latency_ms"], int)

    other_key = add_store(api, "other")
    hidden = api.client.get(f"/v1/invoices/{invoice_id}/callbacks", headers=api.headers(other_key))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    unknown = api.client.get("/v1/invoices/inv_nope/callbacks", headers=api.headers())
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"code", "message", "field"}
    assert api.client.get(f"/v1/invoices/{invoice_id}/callbacks").status_code == 401


def test_api_redeliver(engine: Engine, app_config: AppConfig) -> None:
    api: Api = make_api(engine, app_config)
    created = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "5"}, headers=api.headers()
    )
    (event,) = events_of(engine)
    with session_scope(engine) as s:
        row = s.get(CallbackEvent, event.id)
        assert row is not None
        row.state, row.attempts, row.next_attempt_at = "dead", 10, None
        s.add(row)
    api.clock.advance(hours=1)

    numeric = api.client.post(f"/v1/callbacks/{event.id}/redeliver", headers=api.headers())
    assert numeric.status_code == 404  # the internal counter is not an id
    by_id = api.client.post(f"/v1/callbacks/{event.webhook_id}/redeliver", headers=api.headers())
    assert by_id.status_code == 202, by_id.text
    body = by_id.json()
    assert body["state"] == "pending" and body["webhook_id"] == event.webhook_id
    assert body["next_attempt_at"] == api.clock().isoformat().replace("+00:00", "Z")
    assert body["invoice_id"] == created.json()["id"]
    by_webhook_id = api.client.post(f"/v1/callbacks/{event.webhook_id}/redeliver", headers=api.headers())
    assert by_webhook_id.status_code == 202

    other_key = add_store(api, "other")
    hidden = api.client.post(f"/v1/callbacks/{event.webhook_id}/redeliver", headers=api.headers(other_key))
    assert hidden.status_code == 404 and hidden.json()["error"]["field"] == "delivery_id"
    assert api.client.post("/v1/callbacks/999999/redeliver", headers=api.headers()).status_code == 404
    with session_scope(engine) as s:
        audits = s.exec(select(AuditLog).where(AuditLog.action == "callback.redeliver")).all()
        assert [a.actor for a in audits] == [f"api:{api.store_id}"] * 2
        store = s.get(Store, api.store_id)
        assert store is not None
        store.callbacks_disabled_at = api.clock()
        s.add(store)
    disabled = api.client.post(f"/v1/callbacks/{event.webhook_id}/redeliver", headers=api.headers())
    assert disabled.status_code == 409 and disabled.json()["error"]["code"] == "callbacks_disabled"


@pytest.mark.parametrize("bad", ["%00", "inv%00x", "99999999999999999999999", "%C3%A9", "x" * 64])
def test_api_odd_ids_are_not_found_not_errors(engine: Engine, app_config: AppConfig, bad: str) -> None:
    api = make_api(engine, app_config)
    listed = api.client.get(f"/v1/invoices/{bad}/callbacks", headers=api.headers())
    assert listed.status_code == 404, listed.text
    again = api.client.post(f"/v1/callbacks/{bad}/redeliver", headers=api.headers())
    assert again.status_code == 404, again.text


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    return {
        "PAYWATCH_DATABASE_URL": db_url,
        "PAYWATCH_NETWORKS": str(networks),
        "PAYWATCH_ALLOW_PRIVATE_CALLBACKS": "1",
    }


def test_cli_test_list_redeliver_rotate_enable(
    engine: Engine, app_config: AppConfig, receiver: Receiver, cli_env: dict[str, str]
) -> None:
    runner = CliRunner()
    clock = FakeClock()
    store_id, secret = seed_store(engine, receiver.url("/cli"), clock())

    sent = runner.invoke(cli_app, ["callbacks", "test", store_id], env=cli_env)
    assert sent.exit_code == 0, sent.output
    assert "delivered: HTTP 200" in sent.output
    (got,) = receiver.received
    payload = verify(got, secret)
    assert payload["type"] == "webhook.test" and payload["data"]["store_id"] == store_id

    receiver.plan("/cli", Reply(500, b"nope"))
    failed = runner.invoke(cli_app, ["callbacks", "test", store_id], env=cli_env)
    assert failed.exit_code == 1 and "failed: HTTP 500" in failed.output

    listed = runner.invoke(cli_app, ["callbacks", "list", "--failed", "--json"], env=cli_env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["state"] == "pending" and row["attempt_count"] == 1
    assert row["attempts"][0]["status_code"] == 500 and row["attempts"][0]["response_excerpt"] == "nope"
    table = runner.invoke(cli_app, ["callbacks", "list"], env={**cli_env, "COLUMNS": "80"})
    assert table.exit_code == 0 and "2 callback events" in table.output
    assert max(len(line) for line in table.output.splitlines()) <= 80
    wide = runner.invoke(cli_app, ["callbacks", "list", "--wide"], env=cli_env)
    assert wide.exit_code == 0 and row["webhook_id"] in wide.output  # --wide: every column

    again = runner.invoke(cli_app, ["callbacks", "redeliver", row["webhook_id"], "--now"], env=cli_env)
    assert again.exit_code == 0, again.output
    assert receiver.received[-1].webhook_id == row["webhook_id"]  # the same webhook-id
    queued = runner.invoke(cli_app, ["callbacks", "redeliver", str(row["id"])], env=cli_env)
    assert queued.exit_code == 0 and "queued" in queued.output
    missing = runner.invoke(cli_app, ["callbacks", "redeliver", "msg_missing"], env=cli_env)
    assert missing.exit_code == 2 and "not found" in missing.output

    rotated = runner.invoke(cli_app, ["store", "rotate-secret", store_id, "--grace-hours", "2", "--json"], env=cli_env)
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.output)
    assert new["webhook_secret"].startswith("whsec_") and new["webhook_secret"] != secret
    assert runner.invoke(cli_app, ["callbacks", "test", store_id], env=cli_env).exit_code == 0
    last = receiver.received[-1]
    verify(last, secret)
    verify(last, new["webhook_secret"])
    with session_scope(engine) as s:
        store = s.get(Store, store_id)
        assert store is not None and store.webhook_secret_previous_until is not None
        assert timedelta(hours=1.9) < store.webhook_secret_previous_until - clock() < timedelta(hours=2.1)
        store.callbacks_disabled_at = clock()
        s.add(store)
    blocked = runner.invoke(cli_app, ["callbacks", "redeliver", str(row["id"])], env=cli_env)
    assert blocked.exit_code == 2 and "disabled" in blocked.output
    report = runner.invoke(cli_app, ["callbacks", "list"], env=cli_env, terminal_width=250)
    assert f"store {store_id}: callbacks disabled since" in report.output
    enabled = runner.invoke(cli_app, ["callbacks", "enable", store_id], env=cli_env)
    assert enabled.exit_code == 0
    assert runner.invoke(cli_app, ["callbacks", "redeliver", str(row["id"])], env=cli_env).exit_code == 0
    revoked = runner.invoke(cli_app, ["store", "rotate-secret", store_id, "--grace-hours", "0"], env=cli_env)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with session_scope(engine) as s:
        actions = [a.action for a in s.exec(select(AuditLog).order_by(AuditLog.id))]  # type: ignore[arg-type]
    assert actions.count("store.rotate_secret") == 2 and "callbacks.enabled" in actions


def test_cli_test_needs_a_callback_url(engine: Engine, cli_env: dict[str, str]) -> None:
    store_id, _ = seed_store(engine, None, FakeClock()())
    result = CliRunner().invoke(cli_app, ["callbacks", "test", store_id], env=cli_env)
    assert result.exit_code == 2 and "no callback URL" in result.output
    unknown = CliRunner().invoke(cli_app, ["store", "rotate-secret", "st_nope"], env=cli_env)
    assert unknown.exit_code == 2 and "not found" in unknown.output
