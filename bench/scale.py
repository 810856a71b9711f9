"""Benchmark (part of issue 14's scale proof): growth of the hot paths with the number of invoices,
on PostgreSQL.

    .venv/bin/python bench/scale.py [--database postgresql://127.0.0.1:5432/test] [--sizes 1000,10000,100000,1000000]

A fresh database is created next to ``--database`` (and dropped afterwards). Invoices (all open,
half ETH, half USDT, one fresh address each) are inserted in bulk up to each size; at each size it
prints:

* the watch index build (``build_watch_index``, what a worker does at start and after new
  invoices): seconds and the RSS it adds;
* one scan step's matching: ``WatchIndex.match_all`` over 1,000 transfers (10% to watched
  addresses), in microseconds per transfer (best of 5);
* the invoice lookup of the API (``get_invoice``, by id): milliseconds per lookup (1,000 lookups);
* the watch index's fingerprint query (run on every scan step): milliseconds.

Then the EXPLAIN of the hot queries at the largest size. Flat per-transfer and per-lookup costs
show O(1) matching and indexed queries. Not reached here (see the issue): the two-API/two-worker
run, invoice creation throughput, the callback backlog drain and the scanner-vs-raw ratio at
1,000,000 invoices.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.seed import add_store, insert_invoices, watched_invoice  # noqa: E402

from paywatch.addresses import build_watch_index  # noqa: E402
from paywatch.config import NetworkConfig  # noqa: E402
from paywatch.domain.transfer import NATIVE, Transfer  # noqa: E402
from paywatch.invoices import get_invoice  # noqa: E402
from paywatch.scanner import WatchIndexCache  # noqa: E402
from paywatch.store.db import make_engine, normalize_url, session_scope, upgrade  # noqa: E402

TOKEN = "0x" + "dd" * 20
NETWORK = NetworkConfig.model_validate(
    {
        "name": "bench",
        "family": "evm",
        "chain_id": 31337,
        "rpc_urls": ["http://127.0.0.1:1"],
        "confirmations": 12,
        "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": TOKEN, "decimals": 6}},
    }
)


def rss_mb() -> float:
    """Current RSS of this process (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def invoice_rows(count: int, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        usdt = i % 2 == 1
        rows.append(
            watched_invoice(
                "inv_" + rng.randbytes(10).hex(),
                "0x" + rng.randbytes(20).hex(),
                asset="USDT" if usdt else "ETH",
                asset_key=TOKEN if usdt else NATIVE,
                decimals=6 if usdt else 18,
                amount=10**6,
                confirmations=12,
                now=now,
            )
        )
    return rows


def transfers(addresses: list[str], rng: random.Random, now: datetime) -> list[Transfer]:
    found = []
    for i in range(1000):
        hit = i % 10 == 0
        to = rng.choice(addresses) if hit else "0x" + rng.randbytes(20).hex()
        found.append(Transfer("bench", "0x" + rng.randbytes(32).hex(), -1, 1, "0xb", now, "0xf", to, NATIVE, 10**6))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    base = make_url(normalize_url(args.database))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = "pw_scale_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        run(url, sizes)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


def run(url: str, sizes: list[int]) -> None:
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(14)
    now = datetime.now(UTC)
    add_store(engine, now)
    ids: list[str] = []
    addresses: list[str] = []
    print(
        f"{'invoices':>10} | {'insert s':>8} | {'index build s':>13} | {'index +RSS MB':>13} | "
        f"{'match us/transfer':>17} | {'lookup ms':>9} | {'fingerprint ms':>14}"
    )
    for size in sizes:
        began = time.perf_counter()
        while len(ids) < size:
            rows = invoice_rows(min(20_000, size - len(ids)), rng, now)
            insert_invoices(engine, rows)
            ids.extend(r["id"] for r in rows)
            addresses.extend(r["address"] for r in rows if r["asset_key"] == NATIVE)  # the sample pays ETH
        inserted = time.perf_counter() - began
        with engine.begin() as conn:
            conn.execute(text("ANALYZE invoices"))
        gc.collect()
        before = rss_mb()
        began = time.perf_counter()
        with session_scope(engine) as s:
            index = build_watch_index(s, NETWORK)
        build = time.perf_counter() - began
        grown = rss_mb() - before
        sample = transfers(addresses, rng, now)
        timings = []
        for _ in range(5):  # best of 5: a garbage collection of the large heap can land in one run
            began = time.perf_counter()
            matches, _ = index.match_all(sample)
            timings.append(time.perf_counter() - began)
        match_us = min(timings) / len(sample) * 1e6
        assert len(matches) == 100, len(matches)
        wanted = rng.sample(ids, 1000)
        with session_scope(engine) as s:
            began = time.perf_counter()
            for invoice_id in wanted:
                get_invoice(s, "st_bench", invoice_id)
                s.expunge_all()
            lookup_ms = (time.perf_counter() - began) / len(wanted) * 1e3
        cache = WatchIndexCache(NETWORK)
        with session_scope(engine) as s:
            cache.get(s)  # the first call builds; the timed one only reads the fingerprint
            began = time.perf_counter()
            cache.get(s)
            fingerprint_ms = (time.perf_counter() - began) * 1e3
        del index, cache
        print(
            f"{size:>10,} | {inserted:>8.1f} | {build:>13.2f} | {grown:>13.0f} | "
            f"{match_us:>17.2f} | {lookup_ms:>9.3f} | {fingerprint_ms:>14.1f}"
        )
    explain(engine, ids[0])
    engine.dispose()


def explain(engine: Any, invoice_id: str) -> None:
    queries = {
        "invoice lookup by id (get_invoice)": ("SELECT * FROM invoices WHERE id = :id", {"id": invoice_id}),
        "watch index fingerprint (every scan step)": (
            "SELECT (SELECT count(*) FROM invoices WHERE network = 'bench'), "
            "(SELECT max(created_at) FROM invoices WHERE network = 'bench'), "
            "(SELECT count(open_amount) FROM invoices WHERE network = 'bench' AND open_amount IS NOT NULL)",
            {},
        ),
        "watch index build (start, and after new invoices)": (
            "SELECT invoices.id, invoices.address FROM invoices JOIN stores ON stores.id = invoices.store_id "
            "WHERE invoices.network = 'bench'",
            {},
        ),
    }
    with engine.connect() as conn:
        for title, (sql, params) in queries.items():
            print(f"\nEXPLAIN ANALYZE {title}:")
            for (line,) in conn.execute(text("EXPLAIN ANALYZE " + sql), params):
                print("  " + line)


if __name__ == "__main__":
    raise SystemExit(main())
