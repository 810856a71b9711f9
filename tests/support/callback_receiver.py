"""A real local HTTP receiver for callback tests and the benchmark.

It answers scripted replies per path (fail N times, time out, 410, 429 with Retry-After,
redirect), then a default reply, and records every request it got. Signatures are checked with
the ``standardwebhooks`` package. Run as a script it serves plain 200s (for the benchmark)::

    python tests/support/callback_receiver.py --port 0     # prints the port on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paywatch.config import AppConfig
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.netguard import IPAddress
from paywatch.outbox import emit
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackAttempt, CallbackEvent, Store
from paywatch.stores import create_store


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``delay`` seconds pass before it is sent."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def torn(self) -> bool:
        """The sender died mid-request: fewer body bytes arrived than its content-length announced."""
        return len(self.body) != int(self.headers.get("content-length", "-1"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 drops connections under a burst

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed client is part of the tests
            super().handle_error(request, client_address)


class Receiver:
    """A threaded HTTP/1.1 server on 127.0.0.1 with per-path scripts; use as a context manager."""

    def __init__(
        self, default: Reply | None = None, *, record: bool = True, port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.default = default or Reply()
        self.record = record
        self.received: list[Received] = []
        self.count = 0
        self._plans: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self.sni_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = self._note_sni
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _note_sni(self, _sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.sni_names.append(name)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def plan(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, then with the default."""
        with self._lock:
            self._plans.setdefault(path, deque()).extend(replies)

    def hold_after(self, count: int) -> None:
        """Answer the first ``count`` requests, then leave every later one unanswered until
        :meth:`release` (a client can then be stopped at a known point of its work)."""
        with self._lock:
            self._hold_after = count
            self._released.clear()

    def release(self) -> None:
        """Answer the held requests (and every later one) again."""
        self._released.set()

    def _held(self, number: int) -> bool:
        """Wait while request ``number`` is held; False when the receiver stops meanwhile."""
        if self._hold_after is None or number <= self._hold_after:
            return True
        while not self._released.wait(0.05):
            if self._stopping.is_set():
                return False
        return True

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, path: str, received: Received) -> tuple[Reply, int]:
        with self._lock:
            self.count += 1
            if self.record:
                self.received.append(received)
            plan = self._plans.get(path)
            return (plan.popleft() if plan else self.default), self.count

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                reply, number = receiver._next(self.path, got)
                if not receiver._held(number):
                    return
                if reply.delay and receiver._stopping.wait(reply.delay):
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class MappingResolver:
    """A resolver answering from a fixed table (the injected DNS of the SSRF tests)."""

    def __init__(self, table: dict[str, list[IPAddress]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        return list(self.table.get(host, []))


class FakeClock:
    """A clock that starts at the real time and moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def verify(received: Received, secret: str) -> dict[str, Any]:
    """Verify a delivery with ``standardwebhooks``; returns the parsed body.

    Deliveries whose timestamp is outside the package's 5-minute tolerance (tests that move a fake
    clock by hours) are checked with the package's own ``sign`` over the sent timestamp.
    """
    hook = Webhook(secret)
    stamp = int(received.headers["webhook-timestamp"])
    if abs(time.time() - stamp) < 240:
        payload: dict[str, Any] = hook.verify(received.body, received.headers)
        return payload
    expected = hook.sign(received.webhook_id, datetime.fromtimestamp(stamp, UTC), received.body.decode())
    if expected not in received.headers["webhook-signature"].split(" "):
        raise WebhookVerificationError("No matching signature found")
    loaded: dict[str, Any] = json.loads(received.body)
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    receiver = Receiver(record=False, port=args.port)
    print(receiver.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        receiver._server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- database helpers for the tests


def seed_store(engine: Engine, callback_url: str | None, now: datetime) -> tuple[str, str]:
    """A store with ``callback_url``; returns (store id, webhook secret)."""
    with session_scope(engine) as session:
        created = create_store(session, "shop", now, callback_url=callback_url)
        return created.store.id, created.store.webhook_secret


def seed_invoice(
    engine: Engine,
    config: AppConfig,
    store_id: str,
    now: datetime,
    *,
    more_events: tuple[str, ...] = (),
    callback_url: str | None = None,
) -> str:
    """An invoice (its ``invoice.created`` event) plus ``more_events`` through the real outbox."""
    with session_scope(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None
        request = InvoiceRequest("ethereum", "USDT", "10", callback_url=callback_url)
        invoice = create_invoice(session, config, store, request, now)
        if more_events:
            emit(session, invoice, list(more_events), now, config.networks["ethereum"])
        return invoice.id


def events_of(engine: Engine) -> list[CallbackEvent]:
    with session_scope(engine) as session:
        return list(session.exec(select(CallbackEvent).order_by(col(CallbackEvent.id))))


def attempts_of(engine: Engine, event_id: int) -> list[CallbackAttempt]:
    with session_scope(engine) as session:
        stmt = select(CallbackAttempt).where(CallbackAttempt.event_id == event_id).order_by(col(CallbackAttempt.id))
        return list(session.exec(stmt))


class RoutedNetwork(httpcore.AsyncNetworkBackend):
    """A test network: connects to listed (public-looking) addresses reach a local port instead.

    Lets the SSRF guard stay on while the bytes still go to a receiver on 127.0.0.1. Records every
    address a connect was asked for; any other address has no route.
    """

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes
        self.connects: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host not in self.routes:
            raise httpcore.ConnectError(f"test network: no route to {host}")
        return await self._real.connect_tcp("127.0.0.1", self.routes[host], timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)
