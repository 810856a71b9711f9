"""SIGKILL the delivering process in the middle of a batch; after a restart nothing is lost.

The child process (this module's ``child``, forked from the preloaded server of
``tests/support/forked.py``; running this module as a script does the same) delivers with the
real clock; the parent kills it once the receiver has seen part of the batch, then a fresh
dispatcher (its clock past the claim lease) finishes. Every event must arrive at least once,
with its one ``webhook-id`` and a valid signature, and the first arrivals of one invoice's events
must be in order. A request the kill cut short (fewer body bytes than its content-length) is an
attempt, not an arrival: what came of it must be a prefix of the event's body.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.store.db import make_engine
from tests.support.callback_receiver import Receiver, Reply, events_of, seed_invoice, seed_store, verify
from tests.support.forked import ForkedProcess
from tests.support.worker_procs import wait_for

pytestmark = pytest.mark.slow

LEASE = timedelta(seconds=20)
ROOT = Path(__file__).resolve().parent.parent


def child(db_url: str) -> None:
    engine = make_engine(db_url)
    settings = Settings(database_url=db_url, allow_private_callbacks=True)
    dispatcher = Dispatcher(engine, settings, lambda: datetime.now(UTC), concurrency=4, per_host=4, lease=LEASE)
    asyncio.run(dispatcher.run_once())
    print("finished", flush=True)


def test_sigkill_mid_batch_loses_nothing(
    engine: Engine, db_url: str, networks: dict[str, NetworkConfig], tmp_path: Path
) -> None:
    settings = Settings(database_url=db_url, networks=tmp_path / "n.yaml", allow_private_callbacks=True)
    config = AppConfig(settings=settings, networks=networks)
    with Receiver(Reply(200, delay=0.04)) as receiver:
        now = datetime.now(UTC)
        store_id, secret = seed_store(engine, receiver.url("/crash"), now)
        for n in range(30):
            extra = ("invoice.partial", "invoice.completed") if n % 3 == 0 else ()
            seed_invoice(engine, config, store_id, now, more_events=extra)
        events = events_of(engine)
        assert len(events) == 50

        receiver.hold_after(12)  # the child cannot finish: it is killed with part of the batch answered
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        out = tmp_path / "child.out"
        proc = ForkedProcess(child, db_url, env=env, log=out)  # what `python -m tests.test_callbacks_crash` runs
        try:
            wait_for("12 deliveries from the child", lambda: receiver.count > 12 or proc.poll() is not None, 120)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            receiver.release()
        assert proc.returncode == -signal.SIGKILL
        assert "finished" not in out.read_text()
        seen_at_kill = receiver.count
        assert 12 < seen_at_kill < 50  # really killed in the middle of the batch
        states = [e.state for e in events_of(engine)]
        assert states.count("pending") > 0

        # restart: a new process sees the claims expire after the lease (its clock is past it)
        offset = [LEASE + timedelta(seconds=1)]
        restart = Dispatcher(engine, settings, lambda: datetime.now(UTC) + offset[0])

        async def finish() -> None:
            for _ in range(20):
                await restart.run_once()
                if all(e.state == "delivered" for e in events_of(engine)):
                    break
                offset[0] += timedelta(seconds=6)  # let a failed attempt's first retry come due
            await restart.aclose()

        asyncio.run(finish())

    final = events_of(engine)
    assert [e.state for e in final] == ["delivered"] * 50, [(e.id, e.state, e.last_error) for e in final]
    by_id = {e.webhook_id: e for e in final}
    requests = receiver.on("/crash")
    # a request the kill cut short is an attempt, not an arrival; what did arrive is a prefix of its body
    for request in requests:
        if request.torn:
            assert by_id[request.webhook_id].body.encode().startswith(request.body)
    got = [r for r in requests if not r.torn]
    assert {r.webhook_id for r in got} == set(by_id)  # every event arrived, under its one webhook-id
    first_seen: dict[str, int] = {}
    for position, request in enumerate(got):
        assert request.body == by_id[request.webhook_id].body.encode()
        verify(request, secret)
        first_seen.setdefault(request.webhook_id, position)
    per_invoice: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for webhook_id, position in first_seen.items():
        event = by_id[webhook_id]
        per_invoice[event.invoice_id or ""].append((position, json.loads(event.body)["data"]["status_version"]))
    for arrivals in per_invoice.values():
        versions = [version for _, version in sorted(arrivals)]
        assert versions == sorted(versions)


if __name__ == "__main__":
    child(sys.argv[1])
