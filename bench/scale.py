"""Benchmark (part of issue 14's scale proof): growth of the hot paths with the number of invoices,
on PostgreSQL, with a real scanner against a local anvil.

    .venv/bin/python bench/scale.py [--database postgresql://127.0.0.1:5432/test] [--sizes 1000,10000,100000,1000000]
        [--blocks 500] [--sqlite-lock-size 100000]

A fresh database is created next to ``--database`` (and dropped afterwards), and a fresh anvil with
a test ERC-20 is started. Invoices (all open, half ETH, half USDT, one fresh address each) are
inserted in bulk up to each size; at each size it prints:

* the watch index build in this process (``build_watch_index``): seconds and the RSS it adds;
* one scan step's matching: ``WatchIndex.match_all`` over 1,000 transfers (10% to watched
  addresses), in microseconds per transfer (best of 5);
* the invoice lookup of the API (``get_invoice``, by id): milliseconds per lookup (1,000 lookups);
* the watch index's change check (``read_mark``, run on every scan step): milliseconds;
* a worker restart: a child process (so that its peak RSS is its own) builds the scanner's
  watch index (``WatchIndexCache``, paged read transactions) and scans ``--blocks`` new blocks
  (5 transactions each, 1% paying watched invoices) with the real Scanner, 100 blocks a step:
  the build's seconds, the mean step, the blocks per second, and the process's peak RSS;
* raw batched JSON-RPC of the same blocks (``bench/evm_scan.py``'s baseline (a)): blocks per second,
  and the scanner's ratio to it (target >= 0.7).

Then the SQLite lock check (a watch index of ``--sqlite-lock-size`` invoices built while another
connection writes with a 50 ms busy timeout: every write must get through) and the EXPLAIN
ANALYZE of the hot queries at the largest size. Flat per-transfer, per-lookup and per-step costs
show O(1) matching, indexed queries and a change check that does not grow with the invoices.
Invoice creation throughput and the callback backlog drain have benchmarks of their own.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event, text, update
from sqlalchemy.dialects import postgresql

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.evm_scan import deploy_token, mine_blocks, network_config, raw_fetch  # noqa: E402
from bench.procs import fresh_database  # noqa: E402
from bench.seed import add_store, insert_invoices, watched_invoice  # noqa: E402
from tests.support.evm_node import AnvilNode  # noqa: E402

from paywatch.addresses import build_watch_index, watch_rows  # noqa: E402
from paywatch.chains.evm import EvmAdapter  # noqa: E402
from paywatch.config import NetworkConfig  # noqa: E402
from paywatch.domain.status import TERMINAL  # noqa: E402
from paywatch.domain.transfer import NATIVE, Transfer  # noqa: E402
from paywatch.invoices import get_invoice  # noqa: E402
from paywatch.ledger import Ledger  # noqa: E402
from paywatch.scanner import Scanner, WatchIndexCache  # noqa: E402
from paywatch.store.db import make_engine, read_scope, session_scope, upgrade  # noqa: E402
from paywatch.store.models import AccountCounter, WatchVersion  # noqa: E402
from paywatch.store.watch import WatchMark, read_mark, read_versions  # noqa: E402


def rss_mb() -> float:
    """Current RSS of this process (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS (Linux VmHWM), in MB. Not ``ru_maxrss``: a child started by
    subprocess inherits its parent's peak in that figure, and the parent holds the benchmark's lists."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def invoice_rows(count: int, rng: random.Random, now: datetime, token: str) -> list[dict[str, Any]]:
    """``count`` invoices created one microsecond apart from ``now`` on (as the API stamps them)."""
    rows = []
    for i in range(count):
        usdt = i % 2 == 1
        rows.append(
            watched_invoice(
                "inv_" + rng.randbytes(10).hex(),
                "0x" + rng.randbytes(20).hex(),
                asset="USDT" if usdt else "ETH",
                asset_key=token if usdt else NATIVE,
                decimals=6 if usdt else 18,
                amount=10**6,
                confirmations=12,
                now=now + timedelta(microseconds=i),
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
    parser.add_argument("--blocks", type=int, default=500, help="blocks scanned by the worker at each size")
    parser.add_argument("--sqlite-lock-size", type=int, default=100_000)
    parser.add_argument("--scan-child", nargs=4, metavar=("URL", "TOKEN", "FIRST", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan_child:
        url, token, first, db = args.scan_child
        print(json.dumps(scan_child(url, token, int(first), db)))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with fresh_database(args.database, "pw_scale") as url:
        node = AnvilNode("--gas-limit", "300000000").start()
        try:
            token = deploy_token(node)
            run(url, sizes, node, token, args.blocks)
            sqlite_lock_check(args.sqlite_lock_size, token)
        finally:
            node.close()
    return 0


def bench_network(token: str) -> NetworkConfig:
    """The bench network as matching sees it (the RPC URL is never used)."""
    return network_config("http://127.0.0.1:1", token, 0)


def run(url: str, sizes: list[int], node: AnvilNode, token: str, blocks: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    network = bench_network(token)
    rng = random.Random(14)
    now = datetime.now(UTC)
    add_store(engine, now)
    ids: list[str] = []
    addresses: list[str] = []
    print(
        f"{'invoices':>10} | {'insert s':>8} | {'build s':>7} | {'+RSS MB':>7} | {'match us':>8} | "
        f"{'lookup ms':>9} | {'check ms':>8} | {'restart build s':>15} | {'step ms':>7} | "
        f"{'scan blk/s':>10} | {'raw blk/s':>9} | {'ratio':>5} | {'worker peak MB':>14}"
    )
    for size in sizes:
        began = time.perf_counter()
        while len(ids) < size:
            rows = invoice_rows(min(20_000, size - len(ids)), rng, now + timedelta(milliseconds=len(ids)), token)
            insert_invoices(engine, rows)
            ids.extend(r["id"] for r in rows)
            addresses.extend(r["address"] for r in rows)
        inserted = time.perf_counter() - began
        with engine.begin() as conn:
            conn.execute(text("ANALYZE invoices"))
        gc.collect()
        before = rss_mb()
        began = time.perf_counter()
        with read_scope(engine) as s:
            index = build_watch_index(s, network)
        build = time.perf_counter() - began
        grown = rss_mb() - before
        sample = transfers(addresses[::2], rng, now)  # the ETH invoices (rows alternate ETH, USDT)
        timings = []
        for _ in range(5):  # best of 5: a garbage collection of the large heap can land in one run
            began = time.perf_counter()
            matches, _ = index.match_all(sample)
            timings.append(time.perf_counter() - began)
        match_us = min(timings) / len(sample) * 1e6
        assert len(matches) == 100, len(matches)
        del index
        gc.collect()
        wanted = rng.sample(ids, 1000)
        with session_scope(engine) as s:
            began = time.perf_counter()
            for invoice_id in wanted:
                get_invoice(s, "st_bench", invoice_id)
                s.expunge_all()
            lookup_ms = (time.perf_counter() - began) / len(wanted) * 1e3
        with read_scope(engine) as s:
            read_mark(s, "bench")
            began = time.perf_counter()
            for _ in range(100):
                read_mark(s, "bench")
            check_ms = (time.perf_counter() - began) / 100 * 1e3
        first, last, _hits = mine_blocks(node, token, blocks, addresses, rng)
        child = subprocess.run(
            [sys.executable, __file__, "--scan-child", node.url, token, str(first), url],
            capture_output=True,
            text=True,
            check=True,
        )
        worker = json.loads(child.stdout.strip().splitlines()[-1])
        assert worker["blocks"] == last - first + 1, worker
        raw_s, _trips = raw_fetch(node.url, token, first, last)
        scan_bps = worker["blocks"] / worker["scan_s"]
        raw_bps = (last - first + 1) / raw_s
        print(
            f"{size:>10,} | {inserted:>8.1f} | {build:>7.2f} | {grown:>7.0f} | {match_us:>8.2f} | "
            f"{lookup_ms:>9.3f} | {check_ms:>8.3f} | {worker['build_s']:>15.2f} | {worker['step_ms']:>7.0f} | "
            f"{scan_bps:>10.0f} | {raw_bps:>9.0f} | {scan_bps / raw_bps:>5.2f} | {worker['peak_mb']:>14.0f}",
            flush=True,
        )
        print(
            f"{'':>10}   worker: {worker['payments']} payments stored in {worker['steps']} steps; watch index "
            f"built {worker['builds']}x, refreshed {worker['refreshes']}x; "
            f"RSS {worker['start_mb']:.0f} MB at start, {worker['built_mb']:.0f} MB with the index built",
            flush=True,
        )
    explain(engine, ids[0], network)
    engine.dispose()


def scan_child(url: str, token: str, first: int, db_url: str) -> dict[str, Any]:
    """A worker's restart, in a child process: build the watch index, then scan to the tip."""
    network = network_config(url, token, first)
    engine = make_engine(db_url)
    scanner = Scanner(network, EvmAdapter(network), engine, Ledger({network.name: network}), lambda: datetime.now(UTC))
    start_mb = rss_mb()
    began = time.perf_counter()
    scanner.watch.get()
    build_s = time.perf_counter() - began
    built_mb = rss_mb()
    steps = []
    began = time.perf_counter()
    while True:
        step_began = time.perf_counter()
        result = scanner.step()
        steps.append((time.perf_counter() - step_began, result.blocks))
        if result.caught_up:
            break
    scan_s = time.perf_counter() - began
    scanner.close()
    with session_scope(engine) as s:
        payments = s.execute(text("SELECT count(*) FROM payments")).scalar_one()
    full = [seconds for seconds, count in steps if count == network.batch_blocks]
    return {
        "build_s": build_s,
        "scan_s": scan_s,
        "blocks": sum(count for _, count in steps),
        "steps": len(steps),
        "step_ms": sum(full) / max(1, len(full)) * 1e3,
        "payments": payments,
        "builds": scanner.watch.builds,
        "refreshes": scanner.watch.refreshes,
        "start_mb": start_mb,
        "built_mb": built_mb,
        "peak_mb": peak_rss_mb(),
    }


def sqlite_lock_check(size: int, token: str) -> None:
    """Build a watch index of ``size`` invoices on SQLite while another connection keeps writing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lock.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        engine = make_engine(url)
        now = datetime.now(UTC)
        add_store(engine, now)
        rng = random.Random(15)
        for at in range(0, size, 20_000):
            insert_invoices(engine, invoice_rows(min(20_000, size - at), rng, now, token))
        cache = WatchIndexCache(bench_network(token), engine)
        done = threading.Event()
        built: list[float] = []

        def build() -> None:
            began = time.perf_counter()
            cache.get()
            built.append(time.perf_counter() - began)
            done.set()

        thread = threading.Thread(target=build)
        writes, locked, slowest = 0, 0, 0.0
        other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        thread.start()
        while not done.is_set():
            began = time.perf_counter()
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE stores SET name = ?", (f"w{writes}",))
                other.execute("COMMIT")
                writes += 1
            except sqlite3.OperationalError:
                locked += 1
            slowest = max(slowest, time.perf_counter() - began)
            time.sleep(0.01)
        thread.join()
        other.close()
        engine.dispose()
    print(
        f"\nSQLite lock check: watch index of {size:,} invoices built in {built[0]:.1f} s while another "
        f"connection wrote {writes} times ({locked} refused as locked, slowest write {slowest * 1e3:.0f} ms)"
    )


def explain(engine: Engine, invoice_id: str, network: NetworkConfig) -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    final = [status.value for status in TERMINAL]
    with read_scope(engine) as s:
        first = watch_rows(s, network, limit=1)[0]
        page = _sent(engine, lambda: watch_rows(s, network, after=(first[-1], first[0]), limit=20_000))
        since = sql(_captured(lambda: watch_rows(s, network, since=WatchMark(0, (), 0, 0))))
        versions = sql(_captured(lambda: read_versions(s, "bench")))
    queries = {
        "watch index change check (read_mark: this and the snapshot, every scan step)": versions,
        "invoice lookup by id (get_invoice)": f"SELECT * FROM invoices WHERE id = '{invoice_id}'",
        "watch index page (a build reads 20,000 invoices per transaction)": page,
        "watch index refresh (invoices stamped since the mark seen)": since,
        "lowest open invoice height (a network's first scan only)": (
            "SELECT min(created_height) FROM invoices WHERE network = 'bench' AND status NOT IN "
            + "("
            + ", ".join(f"'{v}'" for v in final)
            + ")"
        ),
        "HD index allocation (every address-strategy invoice)": sql(
            update(AccountCounter)
            .where(AccountCounter.account == "xpub:bench")  # type: ignore[arg-type]
            .values(next_index=AccountCounter.next_index + 1)
            .returning(AccountCounter.next_index)
        ),
        "watch version bump (a new store address; a new invoice only on SQLite)": sql(
            update(WatchVersion)
            .where(WatchVersion.network == "bench")  # type: ignore[arg-type]
            .values(version=WatchVersion.version + 1)
            .returning(WatchVersion.version)
        ),
    }
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO account_counters (account, next_index) VALUES ('xpub:bench', 1)"))
        conn.execute(text("INSERT INTO watch_versions (network, version) VALUES ('bench', 0) ON CONFLICT DO NOTHING"))
        for title, statement in queries.items():
            print(f"\nEXPLAIN ANALYZE {title}:\n  {statement}")
            for (line,) in conn.execute(text("EXPLAIN ANALYZE " + statement.replace(":", "\\:"))):
                print("  " + line)
        conn.rollback()


def _sent(engine: Engine, call: Any) -> str:
    """The last statement ``call`` sends to PostgreSQL, its parameters rendered by psycopg (the page
    key is bound as the driver gave it, which SQLAlchemy cannot render as a literal)."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = seen[-1]
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        return psycopg.ClientCursor(raw).mogrify(statement, parameters)


def _captured(call: Any) -> Any:
    """The last statement ``call`` executes (to EXPLAIN exactly what the code runs)."""
    seen: list[Any] = []

    def capture(_conn: Any, clauseelement: Any, *_args: Any) -> None:
        seen.append(clauseelement)

    event.listen(Engine, "before_execute", capture)
    try:
        call()
    finally:
        event.remove(Engine, "before_execute", capture)
    return seen[-1]


if __name__ == "__main__":
    raise SystemExit(main())
