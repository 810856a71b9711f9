"""An invoice creation that waits on a database lock must not stop the API's other requests.

``POST /v1/invoices`` is an async handler (it reads the raw body to tell fiat from crypto
invoices); its database work once ran on the event loop, so one request waiting on a row lock
froze the whole process, and two API processes could deadlock each other (found by
bench/scale_api.py). PostgreSQL only: that is where a lock wait happens inside the handler.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from paywatch.api.app import create_app
from paywatch.config import AppConfig
from paywatch.store.db import make_engine, session_scope
from paywatch.stores import create_store
from tests.conftest import PG_URL, T0
from tests.support.worker_procs import wait_for

BODY = {"network": "ethereum", "asset": "USDT", "amount": "25.5"}


@pytest.fixture
def pg_engine(app_config: AppConfig, engine: Engine) -> Engine:
    if not PG_URL or engine.dialect.name != "postgresql":
        pytest.skip("the lock wait inside the handler needs PostgreSQL (PAYWATCH_TEST_DATABASE_URL)")
    return engine


def _waiting_on_counter(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE account_counters%'"
        )
        return bool(conn.execute(text(query)).scalar())


def test_a_creation_waiting_on_a_lock_leaves_the_other_requests_served(
    pg_engine: Engine, app_config: AppConfig
) -> None:
    with session_scope(pg_engine) as session:
        key = create_store(session, "shop", T0).api_key
    app = create_app(app_config, engine=pg_engine, clock=lambda: T0)
    headers = {"X-Api-Key": key}
    answers: dict[str, Any] = {}
    with TestClient(app) as client:  # one event loop serves every request below
        assert client.post("/v1/invoices", json=BODY, headers=headers).status_code == 201  # the counter exists
        holder = make_engine(app_config.settings.database_url).connect()
        blocked: threading.Thread | None = None
        try:
            holder.execute(text("SELECT next_index FROM account_counters FOR UPDATE"))
            blocked = threading.Thread(
                target=lambda: answers.update(created=client.post("/v1/invoices", json=BODY, headers=headers))
            )
            blocked.start()
            wait_for("the creation to wait on the counter's lock", lambda: _waiting_on_counter(pg_engine), 30)
            other = threading.Thread(target=lambda: answers.update(health=client.get("/healthz")))
            other.start()
            wait_for("GET /healthz to answer while the creation waits", lambda: "health" in answers, 30)
            assert answers["health"].status_code == 200
            assert "created" not in answers  # still waiting: the lock is held
        finally:
            holder.rollback()
            holder.close()
            holder.engine.dispose()
            if blocked is not None:
                blocked.join(timeout=60)
    assert answers["created"].status_code == 201, answers["created"].text
