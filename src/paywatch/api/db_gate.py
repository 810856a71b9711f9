"""Admission control: at most the connection pool's capacity of requests do database work at once.

FastAPI runs one request's sync dependencies and handler in several hops through anyio's worker
threads, whose limiter has a fixed number of tokens (40). A thread waiting in the pool's checkout
holds a token; once such waits hold every token, the requests that already hold a connection get
no thread for their next hop and cannot release it: a deadlock that only the pool timeout breaks
(HTTP 500s). The gate is taken on the event loop before any hop that may check out a connection
and released after the session's teardown, so at most the pool's capacity of requests is admitted
(each holds one connection at a time): none waits in a checkout, and the rest queue on the event
loop, holding neither a thread nor a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

import anyio.to_thread
from sqlalchemy.engine import Engine

from paywatch.store.db import pool_capacity

#: worker-thread tokens beyond the gate's size, for the sync work that needs no connection
THREAD_HEADROOM = 8


class DbGate:
    """The admission gate of one engine: an ``asyncio.Semaphore`` of the pool's capacity per event
    loop (a semaphore belongs to one loop; tests run several), shared by every app on the engine."""

    def __init__(self, engine: Engine) -> None:
        self.capacity = pool_capacity(engine)
        self._semaphores: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    def _semaphore(self) -> asyncio.Semaphore | None:
        if self.capacity is None:
            return None
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.capacity)
            # the admitted requests must always find a thread: keep more tokens than the gate's size
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.capacity + THREAD_HEADROOM)
        return semaphore

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a place among the requests doing database work; wait on the event loop for one."""
        semaphore = self._semaphore()
        if semaphore is None:
            yield
            return
        async with semaphore:
            yield


_GATES: WeakKeyDictionary[Engine, DbGate] = WeakKeyDictionary()


def gate_of(engine: Engine) -> DbGate:
    """The one gate of ``engine`` (the API and a ``PAYWATCH_METRICS_BIND`` server share it)."""
    gate = _GATES.get(engine)
    if gate is None:
        gate = _GATES[engine] = DbGate(engine)
    return gate
