"""Benchmark (issue 14's scale proof): draining a callback backlog with two real worker processes.

    .venv/bin/python bench/scale_callbacks.py [--database postgresql://127.0.0.1:5432/test]
        [--events 100000] [--per-invoice 4] [--raw 20000] [--concurrency 8]

A merchant was down for an hour: ``--events`` callback events (``--per-invoice`` per invoice, in
status order, written over that hour) wait in the outbox of a fresh PostgreSQL database (created
next to ``--database``, dropped afterwards), all due now. Then two ``paywatch worker`` processes
start and deliver them to a local receiver (bench/receiver.py: asyncio, checks every signature,
records webhook id, invoice id and status_version in arrival order). The workers run as in
production (their scanner follows a local anvil), with ``PAYWATCH_ALLOW_PRIVATE_CALLBACKS=1`` and
``PAYWATCH_CALLBACK_PORTS`` set to the receiver's port (docs/security.md: a loopback receiver on
another port is refused otherwise).

Baseline in the same run: the receiver's raw capacity, two processes of a plain httpx client
posting ``--raw`` of the same signed bodies, ``--concurrency`` in flight each. Goal: >= 500
deliveries/s; each invoice's events in order; no event delivered twice; the peak RSS of each
worker is reported. Exit code 1 only on errors (a lost, repeated, reordered or badly signed
delivery); a missed goal is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.procs import Child, fresh_database, peak_rss_mb, start_anvil, wait_for  # noqa: E402
from bench.seed import STORE_ID, add_store, insert_invoices, watched_invoice  # noqa: E402

from paywatch.callbacks.signing import webhook_headers  # noqa: E402
from paywatch.config import parse_networks, raw_document  # noqa: E402
from paywatch.demo import DEMO_XPUB  # noqa: E402
from paywatch.domain.status import Heights  # noqa: E402
from paywatch.domain.transfer import NATIVE  # noqa: E402
from paywatch.inputs import strict_json  # noqa: E402
from paywatch.store.db import make_engine, upgrade  # noqa: E402
from paywatch.store.models import CallbackEvent, Invoice, Store  # noqa: E402
from paywatch.stores import new_webhook_secret  # noqa: E402
from paywatch.views import invoice_view, iso  # noqa: E402

TYPES = ("invoice.created", "invoice.payment_received", "invoice.waiting_for_confirmations", "invoice.completed")
OUTAGE = timedelta(hours=1)
GOAL_RATE = 500.0


def networks_document(rpc_url: str) -> dict[str, Any]:
    network = {
        "family": "evm",
        "chain_id": 31337,
        "rpc_urls": [rpc_url],
        "confirmations": 2,
        "poll_interval": 2,
        "xpub": DEMO_XPUB,
        "assets": {"ETH": {"native": True, "decimals": 18}},
    }
    return {"networks": {"bench": network}}


def seed(engine: Any, networks: dict[str, Any], url: str, secret: str, events: int, per_invoice: int) -> list[bytes]:
    """The backlog: invoices and their events, due now; returns a sample of bodies for the baseline."""
    rng = random.Random(14)
    now = datetime.now(UTC)
    network = parse_networks(raw_document(networks), source="bench")["bench"]
    add_store(engine, now - OUTAGE)
    with engine.begin() as conn:
        conn.execute(update(Store).where(Store.id == STORE_ID).values(callback_url=url, webhook_secret=secret))
    count = events // per_invoice
    invoices, rows = [], []
    for i in range(count):
        inv_id = "inv_" + rng.randbytes(10).hex()
        row = watched_invoice(
            inv_id,
            "0x" + rng.randbytes(20).hex(),
            asset="ETH",
            asset_key=NATIVE,
            decimals=18,
            amount=5 * 10**16,
            confirmations=2,
            now=now - OUTAGE,
            address_index=i + 1,
        )
        invoices.append(row)
        invoice = Invoice(**{k: v for k, v in row.items() if k != "metadata"}, metadata_={})
        data = invoice_view(invoice, [], [], Heights(tip=-1, final=None), network)
        at = now - OUTAGE + timedelta(seconds=rng.uniform(0, OUTAGE.total_seconds() - 120))
        for k in range(per_invoice):
            at += timedelta(seconds=rng.uniform(1, 30))
            body = strict_json(
                {"type": TYPES[k % len(TYPES)], "timestamp": iso(at), "data": {**data, "status_version": k + 1}}
            )
            rows.append(
                {
                    "webhook_id": "msg_" + rng.randbytes(12).hex(),
                    "store_id": STORE_ID,
                    "invoice_id": inv_id,
                    "type": TYPES[k % len(TYPES)],
                    "status_version": k + 1,
                    "body": body,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": at,
                    "created_at": at,
                }
            )
    rows.sort(key=lambda r: r["created_at"])  # outbox ids grow with time, as they do in production
    for start in range(0, len(invoices), 20_000):
        insert_invoices(engine, invoices[start : start + 20_000])
    for start in range(0, len(rows), 10_000):
        with engine.begin() as conn:
            conn.execute(insert(CallbackEvent), rows[start : start + 10_000])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return [r["body"].encode() for r in rows[:2000]]


def _raw_process(
    url: str, secret: str, bodies: list[bytes], count: int, concurrency: int, barrier: Any, out: Any
) -> None:
    """One raw client process (spawned): post ``count`` signed bodies, report (start, end, failures)."""

    async def run() -> tuple[float, float, int]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        failures = 0
        async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=30) as client:
            jobs = list(range(count))

            async def worker() -> None:
                nonlocal failures
                while jobs:
                    n = jobs.pop()
                    body = bodies[n % len(bodies)]
                    headers = webhook_headers([secret], f"msg_raw{os.getpid()}_{n}", int(time.time()), body)
                    headers["content-type"] = "application/json"
                    response = await client.post(url, content=body, headers=headers)
                    failures += response.status_code != 200

            barrier.wait()
            began = time.time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return began, time.time(), failures

    out.put(asyncio.run(run()))


def raw_capacity(url: str, secret: str, bodies: list[bytes], count: int, concurrency: int) -> tuple[float, int]:
    """Requests per second of two raw client processes together, and their failures."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_raw_process, args=(url, secret, bodies, count // 2, concurrency, barrier, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    began, ended = min(r[0] for r in results), max(r[1] for r in results)
    return 2 * (count // 2) / (ended - began), sum(r[2] for r in results)


def control(port: int, path: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=60, trust_env=False).json()
    return result


def check_records(path: Path, expected: int, per_invoice: int) -> tuple[list[str], dict[str, int]]:
    """Errors (lost, repeated, out-of-order deliveries) and counts, from the receiver's records."""
    seen: set[str] = set()
    last: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    for line in path.read_text().splitlines():
        webhook_id, invoice_id, version, _at = json.loads(line)
        counts["received"] += 1
        if webhook_id in seen:
            counts["repeated"] += 1
        seen.add(webhook_id)
        if version <= last.get(invoice_id, 0):
            counts["out_of_order"] += 1
        last[invoice_id] = version
    if counts["received"] != expected or len(seen) != expected:
        problems.append(f"{expected} events, {counts['received']} deliveries of {len(seen)} distinct ones")
    if counts["repeated"]:
        problems.append(f"{counts['repeated']} events delivered more than once")
    if counts["out_of_order"]:
        problems.append(f"{counts['out_of_order']} deliveries came before an earlier event of their invoice")
    if any(v != per_invoice for v in last.values()):
        problems.append("some invoice's last delivered event is not its last event")
    return problems, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-invoice", type=int, default=4)
    parser.add_argument("--raw", type=int, default=20_000, help="requests of the raw baseline")
    parser.add_argument("--concurrency", type=int, default=8, help="raw baseline: in flight per client process")
    args = parser.parse_args()
    with fresh_database(args.database, "pw_scale_cb") as url, tempfile.TemporaryDirectory() as tmp:
        return run(args, url, Path(tmp))


def run(args: argparse.Namespace, db_url: str, tmp: Path) -> int:
    upgrade(db_url)
    engine = make_engine(db_url)
    secret = new_webhook_secret()
    anvil = start_anvil()
    records = tmp / "records.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), BENCH_WEBHOOK_SECRET=secret)
    receiver = Child(
        [sys.executable, str(ROOT / "bench" / "receiver.py"), "--out", str(records)],
        env,
        tmp / "receiver.log",
        pipe_stdout=True,
    )
    workers: list[Child] = []
    try:
        port = int(receiver.first_line())
        hook = f"http://127.0.0.1:{port}/hooks/bench"
        document = networks_document(anvil.url)
        (tmp / "networks.yaml").write_text(raw_document(document))
        began = time.perf_counter()
        bodies = seed(engine, document, hook, secret, args.events, args.per_invoice)
        seeded = time.perf_counter() - began
        raw_rate, raw_failures = raw_capacity(hook, secret, bodies, args.raw, args.concurrency)
        raw_stats = control(port, "/dump")
        worker_env = {
            **env,
            "PAYWATCH_DATABASE_URL": db_url,
            "PAYWATCH_NETWORKS": str(tmp / "networks.yaml"),
            "PAYWATCH_ALLOW_PRIVATE_CALLBACKS": "1",
            "PAYWATCH_CALLBACK_PORTS": str(port),
            "PAYWATCH_LOG_JSON": "1",
        }
        expected = (args.events // args.per_invoice) * args.per_invoice
        started = time.time()
        workers = [Child.paywatch(["worker"], worker_env, tmp / f"worker{n}.log") for n in range(2)]

        def drained() -> bool:
            for worker in workers:
                worker.check()
            with engine.connect() as conn:
                pending = conn.execute(text("SELECT count(*) FROM callback_events WHERE state = 'pending'")).scalar()
            return pending == 0

        wait_for("the backlog to drain", drained, timeout=3600, every=0.5)
        drained_at = time.time()
        rss = [peak_rss_mb(w.proc.pid) for w in workers]
    finally:
        for worker in workers:
            worker.close()
        stats = control(port, "/dump") if receiver.alive() else {}
        receiver.close()
        anvil.close()
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, count(*) FROM callback_events GROUP BY state")).all())
        attempts = conn.execute(text("SELECT count(*) FROM callback_attempts")).scalar_one()
    engine.dispose()
    problems, counts = check_records(records, expected, args.per_invoice)
    if stats.get("bad_signatures") or raw_stats.get("bad_signatures"):
        problems.append(f"bad signatures: {stats.get('bad_signatures')} (raw run {raw_stats.get('bad_signatures')})")
    if raw_failures or raw_stats.get("received") != 2 * (args.raw // 2):
        problems.append(f"raw baseline: {raw_failures} failures, {raw_stats.get('received')} received")
    if states != {"delivered": expected}:
        problems.append(f"event states after the drain: {states}")
    if attempts != expected:
        problems.append(f"{attempts} attempts logged for {expected} events")
    first, last = stats["first"], stats["last"]
    rate = expected / (last - first)
    overall = expected / (drained_at - started)
    print(
        f"{expected:,} events on {expected // args.per_invoice:,} invoices ({args.per_invoice} each) due after "
        f"a one-hour outage; seeded in {seeded:.0f} s; two workers on PostgreSQL"
    )
    print(f"\n{'line':<46} | {'per second':>10}")
    print(f"{'baseline: raw httpx, 2 processes x ' + str(args.concurrency) + ' in flight':<46} | {raw_rate:>10.0f}")
    print(f"{'paywatch: 2 workers, first to last delivery':<46} | {rate:>10.0f}")
    print(f"{'paywatch: 2 workers, start to drained':<46} | {overall:>10.0f}")
    print(f"\npaywatch / raw: {rate / raw_rate:.2f}; drain {drained_at - started:.0f} s from the workers' start")
    print(f"deliveries/s: {rate:.0f} (goal >= {GOAL_RATE:.0f}: {'met' if rate >= GOAL_RATE else 'MISSED'})")
    print(f"peak RSS of the workers: {', '.join(f'{r:.0f} MB' for r in rss)}")
    print(
        f"checked: {counts['received']:,} deliveries, {counts['repeated']} repeated, "
        f"{counts['out_of_order']} out of order, {stats.get('bad_signatures')} bad signatures, "
        f"states {states}, {attempts:,} attempts logged"
    )
    for problem in problems:
        print("ERROR " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
