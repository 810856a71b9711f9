"""Benchmark (part of issue 14's scale proof): growth of the hot paths with the number of invoices,
on PostgreSQL, with a real scanner against a local anvil.

    .venv/bin/python bench/scale.py [--database postgresql://127.0.0.1:5432/test] [--sizes 1000,10000,100000,1000000]
        [--blocks 500] [--sqlite-lock-size 100000] [--profile]

A fresh database is created next to ``--database`` (and dropped afterwards), and a fresh anvil with
a test ERC-20 is started. Invoices (all open, half ETH, half USDT, one fresh address each) are
written by ``INSERT ... SELECT generate_series`` (bench/seed.py's ``seed_series``) up to each size;
at each size it prints:

* the watch index build in this process (``build_watch_index``): seconds and the RSS it adds;
* one scan step's matching: ``WatchIndex.match_all`` over 1,000 transfers (10% to watched
  addresses), in microseconds per transfer (best of 5);
* the invoice lookup of the API (``get_invoice``, by id): milliseconds per lookup (1,000 lookups);
* the watch index's change check (``read_mark``, run on every scan step): milliseconds;
* a worker restart: a child process (so that its peak RSS is its own) builds the scanner's
  watch index (``WatchIndexCache``, paged read transactions) and scans ``--blocks`` new blocks
  (5 transactions each, 1% paying watched invoices) with the real Scanner, 100 blocks a step:
  the build's seconds, the mean step, the blocks per second, and the process's peak RSS (VmHWM);
* raw batched JSON-RPC of the same blocks (``bench/evm_scan.py``'s baseline (a)), read once before
  the worker and twice after it: the median's blocks per second, and the scanner's ratio to it
  (target >= 0.7).

Then the SQLite lock check (a watch index of ``--sqlite-lock-size`` invoices built while another
connection writes with a 50 ms busy timeout: every write must get through), the EXPLAIN ANALYZE at
the largest size of the hot queries and of every distinct statement the worker's last full scan
step sent (each in a transaction rolled back), and a final table of each figure against its goal.
Flat per-transfer, per-lookup and per-step costs show O(1) matching, indexed queries and a change
check that does not grow with the invoices. ``--profile`` adds, at the largest size, a second
worker run over as many new blocks under cProfile (its main thread: the prefetch thread's reads run
beside it), and prints its top functions.
Invoice creation throughput and the callback backlog drain have benchmarks of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from bench.seed import SeriesAddresses, add_store, insert_invoices, seed_series, series_id, watched_invoice  # noqa: E402
from tests.support.evm_node import AnvilNode  # noqa: E402

from paywatch.addresses import WATCH_PAGE, build_watch_index, watch_rows  # noqa: E402
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

#: the goals of issue 14's scale proof
RATIO_GOAL = 0.7  # the scanner's blocks per second against raw batched JSON-RPC of the same blocks
PEAK_GOAL_MB = 500.0  # the worker's peak RSS
FLAT = 2.0  # "flat": the largest size's figure at most this many times the smallest size's
SEQ_SCAN_ROWS = 10_000  # a scan step statement reading more rows than this sequentially grows with the tables


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


def transfers(addresses: Sequence[str], rng: random.Random, now: datetime) -> list[Transfer]:
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
    parser.add_argument("--profile", action="store_true", help="cProfile a second worker run at the largest size")
    parser.add_argument(
        "--scan-child", nargs=5, metavar=("URL", "TOKEN", "FIRST", "DB", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.scan_child:
        url, token, first, db, mode = args.scan_child
        print(json.dumps(scan_child(url, token, int(first), db, profile=mode == "profile")))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    began = time.perf_counter()
    with fresh_database(args.database, "pw_scale") as url:
        node = AnvilNode("--gas-limit", "300000000").start()
        try:
            token = deploy_token(node)
            rows, explained = run(url, sizes, node, token, args.blocks, args.profile)
            lock = sqlite_lock_check(args.sqlite_lock_size, token)
        finally:
            node.close()
    goals(rows, explained, lock)
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s")
    return 0


def bench_network(token: str) -> NetworkConfig:
    """The bench network as matching sees it (the RPC URL is never used)."""
    return network_config("http://127.0.0.1:1", token, 0)


@dataclass
class Row:
    """One size's figures."""

    size: int
    build_s: float
    grown_mb: float
    match_us: float
    lookup_ms: float
    check_ms: float
    worker: dict[str, Any]
    scan_bps: float
    raw_bps: float

    @property
    def ratio(self) -> float:
        return self.scan_bps / self.raw_bps


def run(
    url: str, sizes: list[int], node: AnvilNode, token: str, blocks: int, profile: bool
) -> tuple[list[Row], Explained]:
    upgrade(url)
    engine = make_engine(url)
    network = bench_network(token)
    rng = random.Random(14)
    now = datetime.now(UTC)
    add_store(engine, now)
    seeded = 0
    rows: list[Row] = []
    worker: dict[str, Any] = {}
    print(
        f"{'invoices':>10} | {'insert s':>8} | {'build s':>7} | {'+RSS MB':>7} | {'match us':>8} | "
        f"{'lookup ms':>9} | {'check ms':>8} | {'restart build s':>15} | {'step ms':>7} | "
        f"{'scan blk/s':>10} | {'raw blk/s':>9} | {'ratio':>5} | {'worker peak MB':>14}"
    )
    for size in sizes:
        began = time.perf_counter()
        for first in range(seeded + 1, size + 1, 250_000):  # invoice g: series_id(g), series_address(g)
            seed_series(engine, first, min(size, first + 249_999), token, now)
        seeded = size
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE invoices"))
        inserted = time.perf_counter() - began
        addresses = SeriesAddresses(1, size)
        gc.collect()
        before = rss_mb()
        began = time.perf_counter()
        with read_scope(engine) as s:
            index = build_watch_index(s, network)
        build = time.perf_counter() - began
        grown = rss_mb() - before
        sample = transfers(SeriesAddresses(2, size, 2), rng, now)  # the ETH invoices (even numbers)
        timings = []
        for _ in range(5):  # best of 5: a garbage collection of the large heap can land in one run
            began = time.perf_counter()
            matches, _ = index.match_all(sample)
            timings.append(time.perf_counter() - began)
        match_us = min(timings) / len(sample) * 1e6
        assert len(matches) == 100, len(matches)
        del index
        gc.collect()
        wanted = [series_id(g) for g in rng.sample(range(1, size + 1), 1000)]
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
        raws = [raw_fetch(node.url, token, first, last)[0]]  # one before the worker, two after: the median
        worker = restart(node, token, first, url)
        assert worker["blocks"] == last - first + 1, worker
        raws += [raw_fetch(node.url, token, first, last)[0] for _ in range(2)]
        raw_s = sorted(raws)[1]
        row = Row(
            size,
            build,
            grown,
            match_us,
            lookup_ms,
            check_ms,
            worker,
            worker["blocks"] / worker["scan_s"],
            (last - first + 1) / raw_s,
        )
        rows.append(row)
        print(
            f"{size:>10,} | {inserted:>8.1f} | {build:>7.2f} | {grown:>7.0f} | {match_us:>8.2f} | "
            f"{lookup_ms:>9.3f} | {check_ms:>8.3f} | {worker['build_s']:>15.2f} | {worker['step_ms']:>7.0f} | "
            f"{row.scan_bps:>10.0f} | {row.raw_bps:>9.0f} | {row.ratio:>5.2f} | {worker['peak_mb']:>14.0f}",
            flush=True,
        )
        print(
            f"{'':>10}   worker: {worker['payments']} payments stored in {worker['steps']} steps; watch index "
            f"built {worker['builds']}x, refreshed {worker['refreshes']}x; "
            f"RSS {worker['start_mb']:.0f} MB at start, {worker['built_mb']:.0f} MB with the index built; "
            f"longest transaction {worker['longest_xact_s']:.2f} s",
            flush=True,
        )
    explained = explain(engine, series_id(1), network, worker["statements"])
    if profile:
        first, last, _hits = mine_blocks(node, token, blocks, SeriesAddresses(1, sizes[-1]), rng)
        profiled = restart(node, token, first, url, profile=True)
        print(
            f"\ncProfile of the worker's scan of {profiled['blocks']} blocks at {sizes[-1]:,} invoices "
            f"({profiled['scan_s']:.1f} s under the profiler):\n{profiled['profile']}"
        )
    engine.dispose()
    return rows, explained


def restart(node: AnvilNode, token: str, first: int, url: str, *, profile: bool = False) -> dict[str, Any]:
    """A worker restart in a child process (so that its peak RSS is its own): see :func:`scan_child`.

    Meanwhile the longest open transaction of the child's connections is watched in
    ``pg_stat_activity`` (``longest_xact_s``): a build that held one transaction (and its snapshot,
    or on SQLite the lock) for its whole duration would show the build's time there.
    """
    mode = "profile" if profile else "measure"
    longest = [0.0]
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            while not done.wait(0.05):
                age = conn.execute(
                    "SELECT extract(epoch FROM max(clock_timestamp() - xact_start)) FROM pg_stat_activity "
                    "WHERE application_name = 'paywatch-bench-worker'"
                ).fetchone()
                if age is not None and age[0] is not None:
                    longest[0] = max(longest[0], float(age[0]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--scan-child", node.url, token, str(first), url, mode],
            capture_output=True,
            text=True,
        )
    finally:
        done.set()
        watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"the worker's child failed:\n{child.stderr}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    result["longest_xact_s"] = longest[0]
    return result


def scan_child(url: str, token: str, first: int, db_url: str, *, profile: bool) -> dict[str, Any]:
    """A worker's restart, in a child process: build the watch index, then scan to the tip.

    Also returns every distinct statement the last full step sent, its parameters rendered by
    psycopg (for EXPLAIN ANALYZE), and with ``profile`` the top of a cProfile of the scan.
    """
    network = network_config(url, token, first)
    engine = make_engine(db_url, connect_args={"application_name": "paywatch-bench-worker"})
    scanner = Scanner(network, EvmAdapter(network), engine, Ledger({network.name: network}), lambda: datetime.now(UTC))
    start_mb = rss_mb()
    began = time.perf_counter()
    scanner.watch.get()
    build_s = time.perf_counter() - began
    built_mb = rss_mb()
    steps = []
    sent: dict[str, str] = {}
    step_sent: dict[str, str] = {}

    def capture(conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        step_sent.setdefault(statement, _rendered(conn, statement, parameters))

    profiler = cProfile.Profile() if profile else None
    event.listen(engine, "before_cursor_execute", capture)
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    while True:
        step_began = time.perf_counter()
        step_sent.clear()
        result = scanner.step()
        steps.append((time.perf_counter() - step_began, result.blocks))
        if result.blocks == network.batch_blocks:
            sent = dict(step_sent)
        if result.caught_up:
            break
    if profiler is not None:
        profiler.disable()
    scan_s = time.perf_counter() - began
    event.remove(engine, "before_cursor_execute", capture)
    scanner.close()
    with session_scope(engine) as s:
        payments = s.execute(text("SELECT count(*) FROM payments")).scalar_one()
    full = [seconds for seconds, count in steps if count == network.batch_blocks]
    top = ""
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(25)
        top = out.getvalue()
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
        "statements": list(sent.values()),
        "profile": top,
    }


@dataclass
class LockCheck:
    """The SQLite lock check's figures."""

    size: int
    build_s: float
    writes: int
    locked: int
    slowest_ms: float


def sqlite_lock_check(size: int, token: str) -> LockCheck:
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
    return LockCheck(size, built[0], writes, locked, slowest * 1e3)


def explain(engine: Engine, invoice_id: str, network: NetworkConfig, step: list[str]) -> Explained:
    """EXPLAIN ANALYZE the hot queries, the expiry sweep's and every statement of one scan ``step``
    (each in a transaction that is rolled back, so the writes among them change nothing)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    final = [status.value for status in TERMINAL]
    with read_scope(engine) as s:
        first = watch_rows(s, network, limit=1)[0]
        page = _sent(engine, lambda: watch_rows(s, network, after=(first[-1], first[0]), limit=20_000))
        since = sql(_captured(lambda: watch_rows(s, network, since=WatchMark(0, (), 0, 0))))
        versions = sql(_captured(lambda: read_versions(s, "bench")))
    with session_scope(engine) as s:
        sweep = _all_sent(engine, lambda: Ledger({network.name: network}).expiry_sweep(s, datetime.now(UTC)))
        s.rollback()
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
    for number, statement in enumerate(sweep, 1):
        queries[f"expiry sweep, statement {number} of {len(sweep)} (the worker's sweep job)"] = statement
    for number, statement in enumerate(step, 1):
        queries[f"scan step, statement {number} of {len(step)} (the worker's last full step)"] = statement
    explained = Explained(len(step), 0, 0.0)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.execute("INSERT INTO account_counters (account, next_index) VALUES ('xpub:bench', 1)")
        raw.execute("INSERT INTO watch_versions (network, version) VALUES ('bench', 0) ON CONFLICT DO NOTHING")
        for title, statement in queries.items():
            shown = statement if len(statement) < 800 else statement[:800] + " ..."
            print(f"\nEXPLAIN ANALYZE {title}:\n  {shown}")
            raw.execute("SAVEPOINT replay")
            try:
                plan = [line for (line,) in raw.execute("EXPLAIN ANALYZE " + statement)]
            except psycopg.errors.IntegrityError as exc:  # a replayed insert of a row the step stored
                raw.execute("ROLLBACK TO SAVEPOINT replay")
                print(f"  (not replayable: {exc.diag.message_primary}; its plan:)")
                plan = [line for (line,) in raw.execute("EXPLAIN " + statement)]
            for line in plan:
                print("  " + line)
            if title.startswith("scan step") and plan[-1].startswith("Execution Time"):
                explained.step_ms += float(plan[-1].split(":")[1].split()[0])  # "Execution Time: x ms"
                explained.seq_scans += _scanned(plan) > SEQ_SCAN_ROWS
        raw.rollback()
    return explained


@dataclass
class Explained:
    """What the EXPLAIN ANALYZE of one scan step's statements showed."""

    statements: int
    seq_scans: int  # statements whose plan reads more than SEQ_SCAN_ROWS rows of a table sequentially
    step_ms: float  # their execution times summed


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


def _scanned(plan: list[str]) -> int:
    """The most rows one sequential scan of ``plan`` read (returned plus removed by its filter)."""
    most, current = 0, 0
    for line in plan:
        if "Seq Scan on" in line and "actual time" in line:
            current = int(line.split("rows=")[2].split()[0])
            most = max(most, current)
        elif "Rows Removed by Filter" in line and current:
            most = max(most, current + int(line.split(":")[1]))
            current = 0
    return most


def _rendered(conn: Any, statement: str, parameters: Any) -> str:
    """``statement`` with ``parameters`` (an executemany's first set) rendered by psycopg."""
    first_set = parameters[0] if isinstance(parameters, list | tuple) and parameters else parameters
    return psycopg.ClientCursor(conn.connection.driver_connection).mogrify(statement, first_set)


def _all_sent(engine: Engine, call: Any) -> list[str]:
    """Every statement ``call`` sends to PostgreSQL, its parameters rendered by psycopg."""
    seen: list[str] = []

    def capture(conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append(_rendered(conn, statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


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


def goals(rows: list[Row], explained: Explained, lock: LockCheck) -> None:
    """One table: each figure against its goal (or baseline), met or missed."""
    small, large = rows[0], rows[-1]
    lines: list[tuple[str, str, str, bool | None]] = []

    def flat(name: str, unit: str, figure: Any) -> None:
        grown = figure(large) / figure(small)
        lines.append(
            (
                f"{name}, {small.size:,} -> {large.size:,}",
                f"<= {FLAT:.0f}x",
                f"{figure(small):.3g} -> {figure(large):.3g} {unit} ({grown:.2f}x)",
                grown <= FLAT,
            )
        )

    for row in rows:
        lines.append(
            (f"scanner / raw JSON-RPC at {row.size:,}", f">= {RATIO_GOAL}", f"{row.ratio:.2f}", row.ratio >= RATIO_GOAL)
        )
    for row in rows:
        peak = row.worker["peak_mb"]
        lines.append(
            (
                f"worker peak RSS (VmHWM) at {row.size:,}",
                f"<= {PEAK_GOAL_MB:.0f} MB",
                f"{peak:.0f} MB",
                peak <= PEAK_GOAL_MB,
            )
        )
    lines.append(
        (
            f"watch index build at {large.size:,} (bench process / worker restart)",
            "reported",
            f"{large.build_s:.1f} s, +{large.grown_mb:.0f} MB / {large.worker['build_s']:.1f} s",
            None,
        )
    )
    xact, build = large.worker["longest_xact_s"], large.worker["build_s"]
    lines.append(
        (
            f"worker's longest transaction at {large.size:,} (build {build:.1f} s)",
            "< build/2",
            f"{xact:.2f} s",
            xact < build / 2 if large.size > 2 * WATCH_PAGE else None,  # one page: one transaction
        )
    )
    flat("scan step (100 blocks)", "ms", lambda r: r.worker["step_ms"])
    flat("matching per transfer", "us", lambda r: r.match_us)
    flat("invoice lookup", "ms", lambda r: r.lookup_ms)
    flat("watch index change check", "ms", lambda r: r.check_ms)
    lines.append(
        (
            f"scan step statements reading > {SEQ_SCAN_ROWS:,} rows sequentially at {large.size:,}",
            "0",
            f"{explained.seq_scans} of {explained.statements} ({explained.step_ms:.1f} ms of SQL in all)",
            explained.seq_scans == 0,
        )
    )
    lines.append(
        (
            f"SQLite writes refused during a {lock.size:,}-invoice index build",
            "0",
            f"{lock.locked} of {lock.writes + lock.locked} (slowest {lock.slowest_ms:.0f} ms)",
            lock.locked == 0,
        )
    )
    width = max(len(line[0]) for line in lines)
    print(f"\n{'figure':<{width}} | {'goal':>9} | {'measured':<42} | result")
    for name, goal, measured, met in lines:
        verdict = "reported" if met is None else ("met" if met else "MISSED")
        print(f"{name:<{width}} | {goal:>9} | {measured:<42} | {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
