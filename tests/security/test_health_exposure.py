"""The public port tells only ok/degraded and lag numbers; metrics can be closed or moved.

``/healthz`` never carries error text (a scan error can hold node answers and endpoint names);
``/metrics`` answers 401 without the bearer token when PAYWATCH_METRICS_TOKEN is set, and is
absent from the API when PAYWATCH_METRICS_BIND serves it on an address of its own.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from paywatch.api.app import create_app
from paywatch.api.metrics_server import alongside, metrics_server
from paywatch.config import AppConfig
from paywatch.devnet.node import free_port
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import NetworkState
from tests.conftest import T0
from tests.support.worker_procs import wait_for

pytestmark = pytest.mark.attack("secret_leak")

DETAIL = "ChainError: node said: internal path /srv/node-7 key-ish token zq81x"


def _config(app_config: AppConfig, **settings: object) -> AppConfig:
    return replace(app_config, settings=app_config.settings.model_copy(update=settings))


def test_healthz_has_lag_numbers_but_no_error_text(engine: Engine, app_config: AppConfig) -> None:
    with session_scope(engine) as session:
        session.add(
            NetworkState(network="ethereum", tip_height=12, cursor_height=10, last_scan_at=T0, last_error=DETAIL)
        )
        session.add(NetworkState(network="tron", tip_height=7, cursor_height=7, last_scan_at=T0))
    client = TestClient(create_app(app_config, engine=engine, clock=lambda: T0))
    reply = client.get("/healthz")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "degraded"
    assert body["networks"]["ethereum"] == {
        "status": "failing",
        "tip": 12,
        "cursor": 10,
        "lag_blocks": 2,
        "lag_seconds": None,
        "seconds_since_scan": 0.0,
    }
    assert body["networks"]["tron"]["status"] == "ok"
    assert "zq81x" not in reply.text and "node-7" not in reply.text and "error" not in reply.text


def test_healthz_with_the_database_down_says_error_without_detail(app_config: AppConfig, tmp_path: object) -> None:
    dead = make_engine("postgresql+psycopg://watcher:hunter2pass@127.0.0.1:1/nowhere")
    try:
        reply = TestClient(create_app(app_config, engine=dead)).get("/healthz")
    finally:
        dead.dispose()
    assert reply.status_code == 503
    assert reply.json() == {"status": "error", "database": "error", "networks": {}}


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", "Basic bWV0cmljcw==", "Bearer", "bearer metrics-token-5e3f extra"]
)
def test_metrics_token_is_required(engine: Engine, app_config: AppConfig, header: str | None) -> None:
    config = _config(app_config, metrics_token="metrics-token-5e3f")
    client = TestClient(create_app(config, engine=engine))
    reply = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert "paywatch_" not in reply.text
    good = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-5e3f"})
    assert good.status_code == 200 and "paywatch_head_lag_blocks" in good.text


def test_metrics_on_a_separate_bind_address(engine: Engine, app_config: AppConfig) -> None:
    port = free_port()
    config = _config(app_config, metrics_bind=f"127.0.0.1:{port}")
    assert TestClient(create_app(config, engine=engine)).get("/metrics").status_code == 404
    server = metrics_server(config, engine)
    assert server is not None
    done = threading.Event()

    async def until_done() -> None:
        while not done.is_set():
            await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(alongside(server, until_done())), daemon=True)
    thread.start()
    try:
        wait_for("the metrics server", lambda: server.started, timeout=20)
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert reply.status_code == 200 and "paywatch_head_lag_blocks" in reply.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 404
    finally:
        done.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
