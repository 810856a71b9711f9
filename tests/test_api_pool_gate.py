"""More requests in flight than database connections must queue, not deadlock the thread pool.

FastAPI runs one request's sync dependencies and handler in several worker-thread hops (open the
session, the store lookup that checks out a connection, the handler, the commit). Threads blocked
in SQLAlchemy's pool checkout hold the thread limiter's tokens; once they hold them all, requests
that already have a connection get no thread for their next hop, and only the pool timeout ends
the wait (found by bench/scale_api.py: HTTP 500s after 30 s). The API admits at most the pool's
capacity of requests into database work; the rest wait on the event loop, holding no thread.
Here the pool has one connection, the timeout is short and more requests are in flight than the
limiter has tokens: on the fixed code no request ever waits in a pool checkout, so none fails.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import anyio.to_thread
import httpx
from sqlalchemy.engine import Engine
from sqlmodel import func, select

from paywatch.api.app import create_app
from paywatch.config import AppConfig
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import Invoice
from paywatch.stores import create_store
from tests.conftest import T0

BODY = {"network": "ethereum", "asset": "USDT", "amount": "25.5"}


async def _post_all(app_config: AppConfig, engine: Engine, key: str) -> list[httpx.Response]:
    app = create_app(app_config, engine=engine, clock=lambda: T0, read_tip=lambda _network: None)
    in_flight = anyio.to_thread.current_default_thread_limiter().total_tokens + 24
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=None) as client:
        requests = [client.post("/v1/invoices", json=BODY, headers={"X-Api-Key": key}) for _ in range(in_flight)]
        return await asyncio.gather(*requests)


def test_more_requests_than_threads_and_connections_all_succeed(app_config: AppConfig, engine: Engine) -> None:
    with session_scope(engine) as session:
        key = create_store(session, "shop", T0).api_key
    config = replace(app_config, settings=app_config.settings.model_copy(update={"invoice_rate_per_minute": 0.0}))
    # one connection, and a checkout that waits gives up quickly (a wait is the failure under test)
    tiny = make_engine(config.settings.database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    try:
        answers = asyncio.run(_post_all(config, tiny, key))
    finally:
        tiny.dispose()
    failed = [(answer.status_code, answer.text[:200]) for answer in answers if answer.status_code != 201]
    assert not failed, f"{len(failed)} of {len(answers)} failed, e.g. {failed[0]}"
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Invoice)).one() == len(answers)
