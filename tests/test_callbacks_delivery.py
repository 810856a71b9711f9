"""Delivery against a real local HTTP receiver: signatures, retries, 410, Retry-After, order, log."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.callbacks import admin
from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.callbacks.schedule import MAX_ATTEMPTS, RETRY_DELAYS
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.metrics import REGISTRY
from paywatch.store.db import session_scope
from paywatch.store.models import AuditLog, Store
from tests.support.callback_receiver import (
    FakeClock,
    Receiver,
    Reply,
    attempts_of,
    events_of,
    seed_invoice,
    seed_store,
    verify,
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def config(db_url: str, networks: dict[str, NetworkConfig], tmp_path: Path) -> AppConfig:
    settings = Settings(database_url=db_url, networks=tmp_path / "n.yaml", allow_private_callbacks=True)
    return AppConfig(settings=settings, networks=networks)


def dispatcher(engine: Engine, config: AppConfig, clock: FakeClock, **kw: object) -> Dispatcher:
    return Dispatcher(engine, config.settings, clock, rng=random.Random(7), **kw)  # type: ignore[arg-type]


async def test_delivers_signed_events_in_order(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    store_id, secret = seed_store(engine, receiver.url(), clock())
    first = seed_invoice(engine, config, store_id, clock(), more_events=("invoice.partial", "invoice.completed"))
    second = seed_invoice(engine, config, store_id, clock())
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 4
    await d.aclose()

    assert len(receiver.received) == 4
    payloads = [verify(r, secret) for r in receiver.received]
    mine = [p for p in payloads if p["data"]["id"] == first]
    assert [p["type"] for p in mine] == ["invoice.created", "invoice.partial", "invoice.completed"]
    assert [p["data"]["status_version"] for p in mine] == [1, 2, 3]
    assert any(p["data"]["id"] == second for p in payloads)
    events = events_of(engine)
    assert {e.state for e in events} == {"delivered"}
    by_id = {e.webhook_id: e for e in events}
    for got in receiver.received:
        event = by_id[got.webhook_id]
        assert got.body == event.body.encode()  # the exact stored bytes were signed and sent
        assert got.headers["content-type"] == "application/json"
        assert int(got.headers["webhook-timestamp"]) == int(clock().timestamp())
        log = attempts_of(engine, event.id or 0)
        assert len(log) == 1 and log[0].status_code == 200 and log[0].response_excerpt == "ok"
        assert log[0].error is None and log[0].latency_ms >= 0


async def test_fails_n_times_then_succeeds_on_the_schedule(
    engine: Engine, config: AppConfig, receiver: Receiver
) -> None:
    clock = FakeClock()
    store_id, secret = seed_store(engine, receiver.url("/flaky"), clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/flaky", Reply(500, b"boom"), Reply(502), Reply(404))
    d = dispatcher(engine, config, clock)
    sent = clock()
    for failures, nominal in enumerate(RETRY_DELAYS[:3], start=1):
        assert await d.run_once() == 1
        (event,) = events_of(engine)
        assert event.state == "pending" and event.attempts == failures
        assert event.next_attempt_at is not None
        wait = event.next_attempt_at - clock()
        assert nominal * 0.9 <= wait <= nominal * 1.1  # jittered, persisted
        assert await d.run_once() == 0  # nothing is due before its time
        clock.now = event.next_attempt_at
    assert await d.run_once() == 1
    await d.aclose()
    (event,) = events_of(engine)
    assert event.state == "delivered" and event.attempts == 4
    ids = {r.webhook_id for r in receiver.received}
    assert ids == {event.webhook_id}  # stable across retries
    for got in receiver.received:
        verify(got, secret)
    log = attempts_of(engine, event.id or 0)
    assert [a.status_code for a in log] == [500, 502, 404, 200]
    assert log[0].response_excerpt == "boom" and log[0].error == "HTTP 500"
    assert log[0].at == sent


async def test_dead_after_the_last_attempt_then_redelivered(
    engine: Engine, config: AppConfig, receiver: Receiver
) -> None:
    clock = FakeClock()
    store_id, secret = seed_store(engine, receiver.url("/down"), clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/down", *[Reply(500)] * MAX_ATTEMPTS)
    d = dispatcher(engine, config, clock)
    for _ in range(MAX_ATTEMPTS):
        assert await d.run_once() == 1
        (event,) = events_of(engine)
        if event.next_attempt_at is not None:
            clock.now = event.next_attempt_at
    (event,) = events_of(engine)
    assert event.state == "dead" and event.attempts == MAX_ATTEMPTS and event.next_attempt_at is None
    spent = clock() - event.created_at
    assert timedelta(hours=60) < spent < timedelta(hours=100)  # about three days of retries
    with session_scope(engine) as s:
        failed = admin.list_events(s, failed_only=True)
        assert [e["webhook_id"] for e in failed] == [event.webhook_id]
        admin.redeliver(s, event.webhook_id, clock())
    assert await d.run_once() == 1
    await d.aclose()
    (event,) = events_of(engine)
    assert event.state == "delivered"
    assert len(receiver.received) == MAX_ATTEMPTS + 1
    assert {r.webhook_id for r in receiver.received} == {event.webhook_id}
    verify(receiver.received[-1], secret)
    with session_scope(engine) as s:
        assert s.exec(select(AuditLog).where(AuditLog.action == "callback.redeliver")).one()


async def test_timeout_is_a_failure(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, receiver.url("/slow"), clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/slow", Reply(200, delay=3.0))
    d = dispatcher(engine, config, clock, timeout=0.3)
    assert await d.run_once() == 1
    await d.aclose()
    (event,) = events_of(engine)
    assert event.state == "pending" and event.attempts == 1
    (attempt,) = attempts_of(engine, event.id or 0)
    assert attempt.status_code is None and "within 0.3 s" in (attempt.error or "")
    assert 250 <= attempt.latency_ms < 2000


async def test_410_disables_the_store_endpoint(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, receiver.url("/gone"), clock())
    seed_invoice(engine, config, store_id, clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/gone", Reply(410, b"gone"))
    d = dispatcher(engine, config, clock, concurrency=1)
    gone_before = REGISTRY.get_sample_value("paywatch_callback_deliveries_total", {"result": "gone"}) or 0
    assert await d.run_once() == 1  # the second event is not sent once the endpoint is gone
    events = events_of(engine)
    assert [e.state for e in events] == ["dead", "pending"]
    assert "callbacks are disabled" in (events[0].last_error or "")
    assert REGISTRY.get_sample_value("paywatch_callback_deliveries_total", {"result": "gone"}) == gone_before + 1
    with session_scope(engine) as s:
        store = s.get(Store, store_id)
        assert store is not None and store.callbacks_disabled_at == clock()
        audit = s.exec(select(AuditLog).where(AuditLog.action == "callbacks.disabled")).one()
        assert audit.subject == store_id and audit.details["status_code"] == 410
        with pytest.raises(admin.ConflictError):
            admin.redeliver(s, events[0].webhook_id, clock())
    clock.advance(hours=1)
    assert await d.run_once() == 0
    with session_scope(engine) as s:
        admin.enable_callbacks(s, store_id, clock())
    assert await d.run_once() == 1
    await d.aclose()
    assert [e.state for e in events_of(engine)] == ["dead", "delivered"]


async def test_410_from_an_invoice_url_kills_only_that_event(
    engine: Engine, config: AppConfig, receiver: Receiver
) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, receiver.url("/store"), clock())
    seed_invoice(engine, config, store_id, clock(), callback_url=receiver.url("/invoice"))
    receiver.plan("/invoice", Reply(410))
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 1
    await d.aclose()
    assert [e.state for e in events_of(engine)] == ["dead"]
    assert [r.path for r in receiver.received] == ["/invoice"]  # the invoice URL overrides the store's
    with session_scope(engine) as s:
        store = s.get(Store, store_id)
        assert store is not None and store.callbacks_disabled_at is None


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(engine: Engine, config: AppConfig, receiver: Receiver, status: int) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, receiver.url("/busy"), clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/busy", Reply(status, headers={"Retry-After": "120"}))
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 1
    (event,) = events_of(engine)
    assert event.next_attempt_at == clock() + timedelta(seconds=120)  # not the schedule's 5 s
    clock.advance(seconds=60)
    assert await d.run_once() == 0
    clock.advance(seconds=60)
    assert await d.run_once() == 1
    await d.aclose()
    assert events_of(engine)[0].state == "delivered"


async def test_redirect_is_a_failure_and_not_followed(engine: Engine, config: AppConfig) -> None:
    with Receiver() as first, Receiver() as target:
        clock = FakeClock()
        store_id, _ = seed_store(engine, first.url("/moved"), clock())
        seed_invoice(engine, config, store_id, clock())
        first.plan("/moved", Reply(307, headers={"Location": target.url("/elsewhere")}))
        d = dispatcher(engine, config, clock)
        assert await d.run_once() == 1
        await d.aclose()
        assert target.received == []
        (event,) = events_of(engine)
        assert event.state == "pending" and event.last_status_code == 307
        assert "redirect not followed" in (event.last_error or "")


async def test_rotation_sends_both_signatures_during_the_grace_period(
    engine: Engine, config: AppConfig, receiver: Receiver
) -> None:
    clock = FakeClock()
    store_id, old_secret = seed_store(engine, receiver.url(), clock())
    with session_scope(engine) as s:
        rotated = admin.rotate_secret(s, store_id, clock(), grace=timedelta(hours=2))
    assert rotated.webhook_secret != old_secret and rotated.previous_valid_until == clock() + timedelta(hours=2)
    seed_invoice(engine, config, store_id, clock())
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 1
    (got,) = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(got, old_secret)  # a merchant still on the old secret verifies
    verify(got, rotated.webhook_secret)  # and so does one already on the new secret
    clock.advance(hours=2)
    seed_invoice(engine, config, store_id, clock())
    assert await d.run_once() == 1
    await d.aclose()
    late = receiver.received[1]
    assert len(late.headers["webhook-signature"].split(" ")) == 1
    verify(late, rotated.webhook_secret)
    with pytest.raises(Exception, match="signature"):
        verify(late, old_secret)


async def test_excerpt_is_capped_at_one_kilobyte(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, receiver.url("/big"), clock())
    seed_invoice(engine, config, store_id, clock())
    receiver.plan("/big", Reply(400, b"x" * 5000))
    d = dispatcher(engine, config, clock)
    await d.run_once()
    await d.aclose()
    (event,) = events_of(engine)
    (attempt,) = attempts_of(engine, event.id or 0)
    assert attempt.response_excerpt == "x" * 1024 and attempt.status_code == 400


async def test_events_without_a_url_are_skipped(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    store_id, _ = seed_store(engine, None, clock())
    seed_invoice(engine, config, store_id, clock())
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 0
    await d.aclose()
    (event,) = events_of(engine)
    assert event.state == "skipped" and "no callback URL" in (event.last_error or "")


async def test_a_failing_head_holds_back_later_events_of_its_invoice(
    engine: Engine, config: AppConfig, receiver: Receiver
) -> None:
    clock = FakeClock()
    store_id, secret = seed_store(engine, receiver.url("/order"), clock())
    seed_invoice(engine, config, store_id, clock(), more_events=("invoice.completed",))
    receiver.plan("/order", Reply(500))
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 1
    assert [e.state for e in events_of(engine)] == ["pending", "pending"]
    assert len(receiver.received) == 1
    clock.advance(seconds=10)
    assert await d.run_once() == 2
    await d.aclose()
    types = [json.loads(r.body)["type"] for r in receiver.received]
    assert types == ["invoice.created", "invoice.created", "invoice.completed"]
    for got in receiver.received:
        verify(got, secret)


async def test_per_host_concurrency_is_limited(engine: Engine, config: AppConfig) -> None:
    with Receiver(Reply(200, delay=0.2)) as slow:
        clock = FakeClock()
        store_id, _ = seed_store(engine, slow.url(), clock())
        for _ in range(6):
            seed_invoice(engine, config, store_id, clock())
        d = dispatcher(engine, config, clock, per_host=2)
        assert await d.run_once() == 6
        await d.aclose()
        starts = sorted(r.at for r in slow.received)
        # with two at a time, the 3rd and 5th requests start only after a 0.2 s answer
        assert starts[2] - starts[0] >= 0.15 and starts[4] - starts[2] >= 0.15


async def test_two_replicas_never_send_the_same_event_twice(engine: Engine, config: AppConfig, db_url: str) -> None:
    from paywatch.store.db import make_engine

    with Receiver(Reply(200, delay=0.01)) as slow:
        clock = FakeClock()
        store_id, secret = seed_store(engine, slow.url("/replicas"), clock())
        for n in range(24):
            seed_invoice(engine, config, store_id, clock(), more_events=("invoice.completed",) if n % 2 else ())
        other_engine = make_engine(db_url)
        first = dispatcher(engine, config, clock, batch_size=8, per_host=4)
        second = dispatcher(other_engine, config, clock, batch_size=8, per_host=4)
        counts = await asyncio.gather(first.run_once(), second.run_once())
        await first.aclose()
        await second.aclose()
        other_engine.dispose()
    assert sum(counts) == 36 and min(counts) > 0  # both replicas worked
    ids = [r.webhook_id for r in slow.received]
    assert len(ids) == len(set(ids)) == 36
    assert {e.state for e in events_of(engine)} == {"delivered"}
    by_invoice: dict[str, list[int]] = {}
    for got in slow.received:
        data = verify(got, secret)["data"]
        by_invoice.setdefault(data["id"], []).append(data["status_version"])
    assert all(versions == sorted(versions) for versions in by_invoice.values())


async def test_a_corrupt_secret_fails_its_event_only(engine: Engine, config: AppConfig, receiver: Receiver) -> None:
    clock = FakeClock()
    bad_store, _ = seed_store(engine, receiver.url("/bad"), clock())
    good_store, secret = seed_store(engine, receiver.url("/good"), clock())
    seed_invoice(engine, config, bad_store, clock())
    seed_invoice(engine, config, good_store, clock())
    with session_scope(engine) as s:
        store = s.get(Store, bad_store)
        assert store is not None
        store.webhook_secret = "not-a-secret"
        s.add(store)
    d = dispatcher(engine, config, clock)
    assert await d.run_once() == 2
    await d.aclose()
    bad, good = events_of(engine)
    assert bad.state == "pending" and bad.attempts == 1 and "unexpected ValueError" in (bad.last_error or "")
    assert good.state == "delivered"
    assert [r.path for r in receiver.received] == ["/good"]
    verify(receiver.received[0], secret)
