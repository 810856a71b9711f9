"""``PAYWATCH_METRICS_BIND``: ``/metrics`` on an address of its own, beside the API or the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine

from paywatch.api.context import AppContext
from paywatch.api.routes_health import metrics_app
from paywatch.config import AppConfig, bind_address
from paywatch.ledger import Ledger


class _QuietServer(uvicorn.Server):
    """No signal capture: the process's own handlers stop it (through ``should_exit``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def metrics_server(config: AppConfig, engine: Engine) -> uvicorn.Server | None:
    """A uvicorn server for ``/metrics`` on ``PAYWATCH_METRICS_BIND``; None when it is not set."""
    bind = config.settings.metrics_bind
    if bind is None:
        return None
    host, port = bind_address(bind)
    context = AppContext(config=config, engine=engine, ledger=Ledger(config.networks))
    return _QuietServer(uvicorn.Config(metrics_app(context), host=host, port=port, log_config=None))


async def alongside(server: uvicorn.Server | None, work: Awaitable[Any]) -> Any:
    """Run ``work`` with the metrics ``server`` (if any) beside it; stop the server when it ends."""
    if server is None:
        return await work
    task = asyncio.create_task(server.serve())
    try:
        return await work
    finally:
        server.should_exit = True
        await task
