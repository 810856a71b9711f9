"""Deliver outbox events: claim, sign, send through the SSRF guard, log the attempt, reschedule.

Claiming pushes an event's ``next_attempt_at`` forward by a lease in a short transaction
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas never claim the same row; SQLite serialises
writers). The HTTP request runs outside any transaction; its result is recorded afterwards, in
small batches. A process killed in between leaves the event claimed until the lease ends, when it
is claimed again: delivery is at least once, with the same ``webhook-id``.

Only the oldest pending event of an invoice (or of a fiat invoice) is claimable, so one invoice's
events go out strictly in order (a dead event no longer holds the queue; ``data.status_version`` lets receivers drop
stale ones). Each :meth:`Dispatcher.run_once` repeats claim-and-deliver rounds until nothing is due.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import exists, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from paywatch.audit import audit
from paywatch.callbacks.guard import BlockedDestinationError, Resolver, SystemResolver, vet
from paywatch.callbacks.schedule import EventState, judge, parse_retry_after
from paywatch.callbacks.signing import active_secrets, webhook_headers
from paywatch.callbacks.transport import PinnedTransport, pinned
from paywatch.config import Settings
from paywatch.metrics import DELIVERIES
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackAttempt, CallbackEvent, Invoice, Store

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024
USER_AGENT = "paywatch-callbacks/1"


@dataclass(frozen=True)
class Job:
    """A claimed event with everything needed to send it."""

    event_id: int
    webhook_id: str
    store_id: str
    body: bytes
    url: str
    secrets: tuple[str, ...]  # as stored (sealed when encryption is on); opened just before signing
    attempt: int  # the number of this attempt (1 for the first)
    store_endpoint: bool  # the URL is the store's default (a 410 disables the store's callbacks)


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt, as logged."""

    job: Job
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str | None
    retry_after: str | None = None


@dataclass
class _Run:
    """Per-call concurrency state."""

    overall: asyncio.Semaphore
    per_host: int
    hosts: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # stores whose endpoint answered 410 during this run

    def host(self, key: str) -> asyncio.Semaphore:
        sem = self.hosts.get(key)
        if sem is None:
            sem = self.hosts[key] = asyncio.Semaphore(self.per_host)
        return sem


class Dispatcher:
    """Delivers due callback events; call :meth:`run_once` periodically (the worker does).

    ``resolver`` and ``transport`` are injectable for tests; the default transport pins every
    connection to the addresses the SSRF guard vetted (an injected one should be a
    :class:`~paywatch.callbacks.transport.PinnedTransport` too, or the pinning is lost).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        *,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        concurrency: int = 64,
        per_host: int = 8,
        timeout: float = 15.0,
        batch_size: int = 256,
        lease: timedelta | None = None,
        max_rounds: int = 50,
    ) -> None:
        self._engine = engine
        self._allow_private = settings.allow_private_callbacks
        self._ports = settings.callback_ports
        self._box = settings.secret_box()
        self._clock = clock
        self._resolver: Resolver = resolver or SystemResolver()
        self._transport = transport
        self._rng = rng or random.Random()
        self._concurrency = concurrency
        self._per_host = per_host
        self._timeout = timeout
        self._batch_size = batch_size
        # A claim must outlast the slowest wave of what is in flight (up to a batch and a half, see
        # run_once), or another replica re-sends it early.
        waves = -(-(batch_size + batch_size // 2) // max(1, min(per_host, concurrency)))
        self._lease = lease if lease is not None else timedelta(seconds=waves * timeout + 10)
        self._lease = max(self._lease, timedelta(seconds=timeout + 5))
        self._max_rounds = max_rounds
        self._timeouts = httpx.Timeout(timeout).as_dict()
        self._http_transport: httpx.AsyncBaseTransport | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public

    async def run_once(self) -> int:
        """Deliver everything due now (at most ``max_rounds`` claims); returns the number of attempts made.

        Claims overlap with deliveries: a new batch is claimed as soon as fewer than half a batch
        is in flight, so the sends never wait for a whole batch's slowest answer or for the next
        claim. Outcomes are recorded in small batches as they come in; an invoice's next event
        becomes claimable only once its predecessor is recorded, which keeps each invoice in order.
        """
        run = _Run(asyncio.Semaphore(self._concurrency), self._per_host)
        inflight: set[asyncio.Task[Outcome | None]] = set()
        buffer: list[Outcome] = []
        sent = claims = 0
        starved = False  # the last claim found nothing: claim again only after recording outcomes
        last_flush = time.monotonic()
        while True:
            if not starved and claims < self._max_rounds and len(inflight) <= self._batch_size // 2:
                jobs = await asyncio.to_thread(self._claim, self._clock(), None)
                claims += 1
                inflight.update(asyncio.create_task(self._attempt(job, run)) for job in jobs)
                starved = not jobs
            if not inflight:
                if buffer:
                    await asyncio.to_thread(self._record, buffer)
                    buffer, last_flush, starved = [], time.monotonic(), False
                    continue  # recorded deliveries may have unblocked their invoices' next events
                if starved or claims >= self._max_rounds:
                    return sent
                continue
            done, inflight = await asyncio.wait(inflight, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                if outcome is None:
                    continue
                sent += 1
                DELIVERIES.labels(_result_label(outcome.status_code)).inc()
                buffer.append(outcome)
            if len(buffer) >= 64 or (buffer and time.monotonic() - last_flush > 0.25):
                await asyncio.to_thread(self._record, buffer)
                buffer, last_flush, starved = [], time.monotonic(), False

    async def deliver_now(self, event_id: int) -> Outcome | None:
        """Send one pending event immediately (used by ``callbacks test``); None if not sendable."""
        jobs = await asyncio.to_thread(self._claim, self._clock(), event_id)
        if not jobs:
            return None
        outcome = await self._attempt(jobs[0], _Run(asyncio.Semaphore(1), 1))
        if outcome is not None:
            await asyncio.to_thread(self._record, [outcome])
        return outcome

    async def aclose(self) -> None:
        """Close the HTTP client (and with it the default transport's connections)."""
        if self._http_transport is not None:
            await self._http_transport.aclose()
            self._http_transport = None

    # ------------------------------------------------------------------ claim

    def _claim(self, now: datetime, only: int | None) -> list[Job]:
        earlier = aliased(CallbackEvent)
        blocked = exists().where(
            col(earlier.invoice_id) == col(CallbackEvent.invoice_id),
            col(earlier.state) == EventState.PENDING.value,
            col(earlier.id) < col(CallbackEvent.id),
        )
        blocked_fiat = exists().where(  # a fiat invoice's events (hosted checkout), in order too
            col(earlier.fiat_invoice_id) == col(CallbackEvent.fiat_invoice_id),
            col(earlier.state) == EventState.PENDING.value,
            col(earlier.id) < col(CallbackEvent.id),
        )
        stmt = (
            select(CallbackEvent)
            .join(Store, col(Store.id) == col(CallbackEvent.store_id))
            .where(CallbackEvent.state == EventState.PENDING.value, col(Store.callbacks_disabled_at).is_(None))
        )
        if only is None:
            stmt = stmt.where(col(CallbackEvent.next_attempt_at) <= now, ~blocked, ~blocked_fiat)
            stmt = stmt.order_by(col(CallbackEvent.next_attempt_at), col(CallbackEvent.id)).limit(self._batch_size)
        else:
            stmt = stmt.where(CallbackEvent.id == only)
        stmt = stmt.with_for_update(skip_locked=True, of=CallbackEvent)
        jobs: list[Job] = []
        with session_scope(self._engine) as session:
            events = list(session.exec(stmt))
            if not events:
                return []
            store_ids = {e.store_id for e in events}
            stores = {s.id: s for s in session.exec(select(Store).where(col(Store.id).in_(store_ids)))}
            invoice_ids = {e.invoice_id for e in events if e.invoice_id is not None}
            invoice_urls: dict[str, str | None] = {}
            if invoice_ids:
                rows = session.exec(select(Invoice.id, Invoice.callback_url).where(col(Invoice.id).in_(invoice_ids)))
                invoice_urls = {row[0]: row[1] for row in rows}
            skipped: list[int] = []
            for event in events:
                assert event.id is not None
                store = stores[event.store_id]
                own_url = invoice_urls.get(event.invoice_id) if event.invoice_id is not None else None
                url = own_url or store.callback_url
                if not url:
                    skipped.append(event.id)
                    continue
                jobs.append(
                    Job(
                        event_id=event.id,
                        webhook_id=event.webhook_id,
                        store_id=event.store_id,
                        body=event.body.encode("utf-8"),
                        url=url,
                        secrets=tuple(active_secrets(store, now)),
                        attempt=event.attempts + 1,
                        store_endpoint=own_url is None or own_url == store.callback_url,
                    )
                )
            session.expunge_all()
            if jobs:
                claimed = [job.event_id for job in jobs]
                lease_end = now + self._lease
                session.exec(
                    update(CallbackEvent).where(col(CallbackEvent.id).in_(claimed)).values(next_attempt_at=lease_end)
                )
            if skipped:
                session.exec(
                    update(CallbackEvent)
                    .where(col(CallbackEvent.id).in_(skipped))
                    .values(
                        state=EventState.SKIPPED.value,
                        next_attempt_at=None,
                        last_error="no callback URL configured for the invoice or its store",
                    )
                )
        return jobs

    # ------------------------------------------------------------------ deliver

    def _http(self) -> httpx.AsyncBaseTransport:
        """The transport for this event loop (connections cannot move between loops).

        Requests go straight to the transport, not through an ``httpx.AsyncClient``: no redirect
        following, no cookie jar shared between merchants, less work per request.
        """
        loop = asyncio.get_running_loop()
        if self._http_transport is None or self._http_loop is not loop:
            self._http_transport = self._transport or PinnedTransport()
            self._http_loop = loop
        return self._http_transport

    async def _attempt(self, job: Job, run: _Run) -> Outcome | None:
        """Send one job; None when it was not sent because its endpoint just answered 410."""
        parts = urlsplit(job.url)
        async with run.host(f"{parts.hostname}:{parts.port}"), run.overall:
            if job.store_endpoint and job.store_id in run.gone:
                return None  # stays claimed until the lease ends; the disabled store is not claimed again
            at = self._clock()
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            excerpt: str | None = None
            retry_after: str | None = None
            try:
                secrets = [self._box.open(stored) for stored in job.secrets]
                headers = webhook_headers(secrets, job.webhook_id, int(at.timestamp()), job.body)
                headers["content-type"] = "application/json"
                headers["user-agent"] = USER_AGENT
                async with asyncio.timeout(self._timeout):
                    destination = await vet(
                        job.url, self._resolver, allow_private=self._allow_private, ports=self._ports
                    )
                    with pinned(destination):
                        request = httpx.Request(
                            "POST", job.url, content=job.body, headers=headers, extensions={"timeout": self._timeouts}
                        )
                        response = await self._http().handle_async_request(request)
                        try:
                            status = response.status_code
                            retry_after = response.headers.get("retry-after")
                            excerpt = await _read_prefix(response)
                        finally:
                            await response.aclose()
                if status == 410:
                    error = "HTTP 410: endpoint gone; " + (
                        "the store's callbacks are disabled" if job.store_endpoint else "event dropped"
                    )
                    if job.store_endpoint:
                        run.gone.add(job.store_id)
                elif 300 <= status < 400:
                    error = f"redirect not followed (location: {response.headers.get('location', '-')})"
                elif not 200 <= status < 300:
                    error = f"HTTP {status}"
            except BlockedDestinationError as exc:
                error = f"blocked by the SSRF guard: {exc}"
            except (TimeoutError, httpx.TimeoutException):
                error = f"no complete answer within {self._timeout:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except Exception as exc:  # one bad event (say, a corrupt secret) must not stop the batch
                log.exception("callback %s: unexpected failure", job.webhook_id)
                error = f"unexpected {type(exc).__name__}: {exc}"
            latency = int((time.perf_counter() - started) * 1000)
        return Outcome(job, at, status, latency, error[:1000] if error else None, excerpt, retry_after)

    # ------------------------------------------------------------------ record

    def _record(self, outcomes: list[Outcome]) -> None:
        """Log the attempts and apply the verdicts, in one transaction, with bulk statements."""
        now = self._clock()
        with session_scope(self._engine) as session:
            session.execute(
                insert(CallbackAttempt),
                [
                    {
                        "event_id": o.job.event_id,
                        "url": o.job.url[:2048],
                        "at": o.at,
                        "status_code": o.status_code,
                        "latency_ms": o.latency_ms,
                        "error": o.error,
                        "response_excerpt": o.excerpt,
                    }
                    for o in outcomes
                ],
            )
            ids = sorted({o.job.event_id for o in outcomes})
            rows = session.execute(
                select(CallbackEvent.id, CallbackEvent.state, CallbackEvent.attempts)
                .where(col(CallbackEvent.id).in_(ids))
                .with_for_update()
            ).all()
            current = {row[0]: (row[1], row[2]) for row in rows}
            changes: dict[int, dict[str, object]] = {}
            for outcome in outcomes:
                job = outcome.job
                state, attempts = current[job.event_id]
                if state != EventState.PENDING.value:
                    continue  # delivered meanwhile by another claim (after a lease ran out); keep the log only
                verdict = judge(
                    job.attempt,
                    outcome.status_code,
                    parse_retry_after(outcome.retry_after, now),
                    now,
                    self._rng.random(),
                )
                attempts = max(attempts, job.attempt)
                current[job.event_id] = (verdict.state.value, attempts)
                changes[job.event_id] = {
                    "id": job.event_id,
                    "attempts": attempts,
                    "last_attempt_at": outcome.at,
                    "last_status_code": outcome.status_code,
                    "last_error": outcome.error,
                    "state": verdict.state.value,
                    "next_attempt_at": verdict.next_attempt_at,
                    "delivered_at": now if verdict.state is EventState.DELIVERED else None,
                }
                if verdict.disable_endpoint:
                    self._disable(session, outcome, now)
            if changes:
                session.execute(update(CallbackEvent), list(changes.values()))

    def _disable(self, session: Session, outcome: Outcome, now: datetime) -> None:
        job = outcome.job
        if not job.store_endpoint:
            log.warning("callback URL %s of event %s answered 410 Gone; event is dead", job.url, job.webhook_id)
            return
        changed = session.exec(
            update(Store)
            .where(col(Store.id) == job.store_id, col(Store.callbacks_disabled_at).is_(None))
            .values(callbacks_disabled_at=now)
        )
        if changed.rowcount:
            log.warning("store %s: callback endpoint %s answered 410 Gone; callbacks disabled", job.store_id, job.url)
            audit(
                session,
                now,
                "dispatcher",
                "callbacks.disabled",
                job.store_id,
                url=job.url,
                webhook_id=job.webhook_id,
                status_code=410,
            )


def _result_label(status_code: int | None) -> str:
    if status_code is not None and 200 <= status_code < 300:
        return "delivered"
    return "gone" if status_code == 410 else "failed"


async def _read_prefix(response: httpx.Response) -> str:
    """The first KB of the body, decoded leniently; the rest is not read."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= EXCERPT_BYTES:
            break
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace")
