"""Benchmark: callback deliveries per second against a local receiver, beside its raw request rate.

The receiver (tests/support/callback_receiver.py, a threaded http.server) runs in its own process. In the
same run we measure (1) plain httpx posting the same bodies at the same concurrency: the
receiver's limit, (2) the Dispatcher draining N outbox events (claim, sign, SSRF vet, send, log
each attempt, reschedule) on SQLite or PostgreSQL, and (3) the signing cost per event.

    PYTHONPATH=src python bench/callbacks.py [--events 2000] [--concurrency 8] [--rounds 3] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert
from sqlmodel import select

from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.callbacks.signing import webhook_headers
from paywatch.config import AppConfig, Settings, parse_networks
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import make_engine, session_scope, upgrade
from paywatch.store.models import CallbackEvent, Invoice
from paywatch.stores import create_store

ROOT = Path(__file__).resolve().parent.parent
XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
NETWORKS = f"""
networks:
  ethereum:
    family: evm
    chain_id: 1
    rpc_urls: ["http://127.0.0.1:1"]
    confirmations: 3
    xpub: "{XPUB}"
    assets:
      USDT: {{contract: "0xdAC17F958D2ee523a2206206994597C13D831ec7", decimals: 6}}
"""


def start_receiver() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "callback_receiver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def seed(db_url: str, url: str, count: int) -> tuple[str, bytes]:
    """One real invoice and event, cloned into ``count`` invoices with one event each."""
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    settings = Settings(database_url=db_url, allow_private_callbacks=True)
    config = AppConfig(settings, parse_networks(NETWORKS, source="bench"))
    with session_scope(engine) as s:
        store = create_store(s, "bench", now, callback_url=url).store
        invoice = create_invoice(s, config, store, InvoiceRequest("ethereum", "USDT", "25.5"), now)
        template = s.exec(select(CallbackEvent).where(CallbackEvent.invoice_id == invoice.id)).one()
        row = invoice.model_dump()
        body = template.body
    invoices, events = [], []
    for n in range(count - 1):
        inv_id = "inv_" + secrets.token_hex(10)
        invoices.append({**row, "id": inv_id, "address_key": f"bench{n}", "address_index": None})
        events.append(
            {
                "webhook_id": "msg_" + secrets.token_hex(12),
                "store_id": template.store_id,
                "invoice_id": inv_id,
                "type": template.type,
                "status_version": 1,
                "body": body.replace(invoice.id, inv_id),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    with session_scope(engine) as s:
        s.execute(insert(Invoice), invoices)
        s.execute(insert(CallbackEvent), events)
    engine.dispose()
    return store.webhook_secret, body.encode()


async def raw_rate(url: str, body: bytes, count: int, concurrency: int) -> tuple[float, float]:
    """Requests per second, and this process's CPU milliseconds per request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                response.raise_for_status()

        await asyncio.gather(*(one() for _ in range(50)))  # warm up connections
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1000


async def dispatch_rate(db_url: str, count: int, concurrency: int) -> tuple[float, float]:
    """Deliveries per second and CPU milliseconds per delivery (all threads); all must succeed."""
    engine = make_engine(db_url)
    settings = Settings(database_url=db_url, allow_private_callbacks=True)
    dispatcher = Dispatcher(
        engine, settings, lambda: datetime.now(UTC), concurrency=concurrency, per_host=concurrency, batch_size=500
    )
    started, cpu = time.perf_counter(), time.process_time()
    sent = 0
    for _ in range(100):
        made = await dispatcher.run_once()
        sent += made
        if not made:
            break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await dispatcher.aclose()
    with session_scope(engine) as s:
        undelivered = len(list(s.exec(select(CallbackEvent.id).where(CallbackEvent.state != "delivered"))))
    engine.dispose()
    if undelivered or sent != count:
        raise SystemExit(f"{sent} attempts for {count} events; {undelivered} not delivered")
    return sent / elapsed, cpu / sent * 1000


def signing_cost(secret: str, body: bytes, rounds: int = 20000) -> tuple[float, float]:
    results = []
    for keys in ([secret], [secret, secret]):
        started = time.perf_counter()
        for n in range(rounds):
            webhook_headers(keys, "msg_0123456789abcdef01234567", 1_760_000_000 + n, body)
        results.append((time.perf_counter() - started) / rounds * 1e6)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8, help="overall and per host (the default per host)")
    parser.add_argument("--db", help="URL of an empty database (default: a fresh SQLite file per round)")
    parser.add_argument("--rounds", type=int, default=3, help="alternate raw and dispatcher runs; report medians")
    args = parser.parse_args()
    receiver, port = start_receiver()
    url = f"http://127.0.0.1:{port}/bench"
    raws: list[tuple[float, float]] = []
    rates: list[tuple[float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.rounds):
                db_url = args.db or f"sqlite:///{tmp}/bench{n}.db"
                upgrade(db_url)
                secret, body = seed(db_url, url, args.events)
                raws.append(asyncio.run(raw_rate(url, body, args.events, args.concurrency)))
                rates.append(asyncio.run(dispatch_rate(db_url, args.events, args.concurrency)))
            one, two = signing_cost(secret, body)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    raw, rate = statistics.median(r for r, _ in raws), statistics.median(r for r, _ in rates)
    report = {
        "database": (args.db or "sqlite").split(":", 1)[0],
        "events_per_round": args.events,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "body_bytes": len(body),
        "raw_httpx_requests_per_s": round(raw, 1),
        "dispatcher_deliveries_per_s": round(rate, 1),
        "dispatcher_share_of_raw": round(rate / raw, 3),
        "raw_cpu_ms_per_request": round(statistics.median(c for _, c in raws), 3),
        "dispatcher_cpu_ms_per_delivery": round(statistics.median(c for _, c in rates), 3),
        "raw_rounds_per_s": [round(r) for r, _ in raws],
        "dispatcher_rounds_per_s": [round(r) for r, _ in rates],
        "signing_us_per_event_one_secret": round(one, 2),
        "signing_us_per_event_two_secrets": round(two, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
