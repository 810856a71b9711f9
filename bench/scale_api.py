"""Benchmark (issue 14's scale proof): invoice creation throughput of two real API processes on PostgreSQL.

    .venv/bin/python bench/scale_api.py [--database postgresql://127.0.0.1:5432/test]
        [--invoices 3000] [--concurrency 64] [--rounds 2] [--compare-with OTHER/src]

A fresh database is created next to ``--database`` (and dropped afterwards). Two ``paywatch api``
processes serve it, and a load generator (asyncio streams, ``--concurrency`` kept-alive
connections spread over both, see :func:`drive`) creates address-strategy invoices: each takes the
next HD index of the network's xpub and derives a fresh address. The baseline, measured in the
same run and alternated with paywatch round by round, is a bare FastAPI endpoint
(bench/baseline_api.py) doing one INSERT per request into the same database, also in two processes
under the same server settings and driven by the same generator. Goals: paywatch >= 0.5 of the
baseline and >= 300 invoices/s.

Set up as a production deployment would be:

* the per-store rate limit is raised through its variable (``PAYWATCH_INVOICE_RATE_PER_MINUTE``,
  ``PAYWATCH_INVOICE_BURST``), not switched off: the token bucket is still taken on every request;
* the lag guard reads what the scanner wrote: the network points at a local anvil, and a
  ``paywatch worker`` scans it once before the run (then stops, so that it does not compete for
  the two cores); every request still reads the network's scan state and is accepted as fresh.

Afterwards it checks that every created invoice has its own address and HD index, and that the
number of invoices is the number of 201 answers. ``--compare-with`` names the ``src`` folder of
another paywatch checkout (for example a ``git archive`` of main): two more API processes run that
code on the same database, measured in the same rounds (before/after comparisons on a loaded
machine, where only figures of the same run compare). Then it profiles one creation in this process
(cProfile of the route handler and its transaction, and the SQL statements it sends). Exit code 1
only on errors (a failed request, a duplicate address); a missed goal is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.baseline_api import CREATE_TABLE, TABLE  # noqa: E402
from bench.procs import Child, free_port, fresh_database, port_open, start_anvil, wait_for  # noqa: E402

from paywatch.api.context import AppContext  # noqa: E402
from paywatch.api.routes_invoices import create as create_route  # noqa: E402
from paywatch.api.schemas import InvoiceCreate  # noqa: E402
from paywatch.config import load_config, raw_document  # noqa: E402
from paywatch.demo import DEMO_XPUB  # noqa: E402
from paywatch.ledger import Ledger  # noqa: E402
from paywatch.store.db import make_engine, session_scope, upgrade  # noqa: E402
from paywatch.stores import authenticate  # noqa: E402

NETWORK = "devnet"
BODY = {"network": NETWORK, "asset": "ETH", "amount": "0.05", "order_id": "order-1"}
RATE_ENV = {"PAYWATCH_INVOICE_RATE_PER_MINUTE": "6000000", "PAYWATCH_INVOICE_BURST": "100000"}
GOAL_RATIO = 0.5
GOAL_RATE = 300.0


@dataclass
class Round:
    """One timed run of the load generator against two processes."""

    rate: float
    p50_ms: float
    p99_ms: float
    created: list[dict[str, Any]]
    errors: list[str]
    cpu_ms: float = 0.0
    """CPU time of the two server processes per timed request (warm-up included in neither count
    nor time: measured around the whole drive, divided by all requests), which the load on a
    shared machine does not change the way it changes the rate."""


def request_bytes(port: int, headers: dict[str, str]) -> bytes:
    """The whole HTTP/1.1 request of one creation, built once (every request of a round is the same)."""
    body = json.dumps(BODY).encode()
    lines = [
        "POST /v1/invoices HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a kept-alive connection; the answer's status and body (by Content-Length)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(ports: list[int], count: int, concurrency: int, warmup: int, headers: dict[str, str]) -> Round:
    """POST ``count`` invoices (after ``warmup`` untimed ones), ``concurrency`` kept-alive connections
    spread over ``ports``.

    The load generator is measuring equipment on the same two cores as the servers: it writes
    pre-built request bytes on asyncio streams and reads each answer by its Content-Length (httpx
    spent about as much CPU per request as the baseline server). Every answer is still checked:
    its status, and a 201's body is parsed as JSON and kept for the checks at the end.
    """
    created: list[dict[str, Any]] = []
    errors: list[str] = []
    latencies: list[float] = []
    requests = {port: request_bytes(port, headers) for port in ports}

    async def worker(port: int, jobs: list[int], timed: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while jobs:
                jobs.pop()
                started = time.perf_counter()
                try:
                    status, body = await exchange(reader, writer, requests[port])
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(f"port {port}: {type(exc).__name__}: {exc!r}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if timed:
                    latencies.append(time.perf_counter() - started)
                if status == 201:
                    created.append(json.loads(body))
                else:
                    errors.append(f"HTTP {status}: {body[:300]!r}")
        finally:
            writer.close()

    async def run(total: int, timed: bool) -> float:
        jobs = list(range(total))
        began = time.perf_counter()
        await asyncio.gather(*(worker(ports[n % len(ports)], jobs, timed) for n in range(concurrency)))
        return time.perf_counter() - began

    await run(warmup, False)
    elapsed = await run(count, True)
    latencies.sort()
    return Round(
        rate=count / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
        created=created,
        errors=errors,
    )


def cpu_seconds(children: list[Child]) -> float:
    """User plus system CPU time the processes used so far (Linux /proc)."""
    total = 0
    for child in children:
        fields = Path(f"/proc/{child.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def measured(
    children: list[Child], ports: list[int], args: argparse.Namespace, warmup: int, headers: dict[str, str]
) -> Round:
    """One :func:`drive` round, with the servers' CPU time per request."""
    before = cpu_seconds(children)
    result = asyncio.run(drive(ports, args.invoices, args.concurrency, warmup, headers))
    result.cpu_ms = (cpu_seconds(children) - before) * 1000 / (args.invoices + warmup)
    return result


def write_networks(directory: Path, rpc_url: str) -> Path:
    path = directory / "networks.yaml"
    network = {
        "family": "evm",
        "chain_id": 31337,
        "rpc_urls": [rpc_url],
        "confirmations": 2,
        "poll_interval": 1,
        "xpub": DEMO_XPUB,
        "assets": {"ETH": {"native": True, "decimals": 18}},
    }
    path.write_text(raw_document({"networks": {NETWORK: network}}))
    return path


def environment(url: str, networks: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(
        PAYWATCH_DATABASE_URL=url,
        PAYWATCH_NETWORKS=str(networks),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        **RATE_ENV,
    )
    return env


def feed_lag_guard(env: dict[str, str], engine: Any, logs: Path) -> int:
    """Run ``paywatch worker`` until it has scanned the network once; the tip it recorded."""
    worker = Child.paywatch(["worker"], env, logs / "worker.log")
    try:

        def scanned() -> int | None:
            worker.check()
            with engine.connect() as conn:
                row = conn.execute(
                    text("SELECT tip_height FROM network_states WHERE network = :n AND last_scan_at IS NOT NULL"),
                    {"n": NETWORK},
                ).first()
            return None if row is None or row[0] is None else int(row[0]) + 1  # +1: height 0 is falsy

        return wait_for("the worker's first scan", scanned) - 1
    finally:
        worker.close()


def start_servers(kind: str, env: dict[str, str], logs: Path) -> tuple[list[Child], list[int]]:
    children, ports = [], []
    for n in range(2):
        port = free_port()
        if kind.startswith("paywatch"):
            child = Child.paywatch(["api", "--port", str(port)], env, logs / f"{kind}{n}.log")
        else:
            argv = [sys.executable, str(ROOT / "bench" / "baseline_api.py"), "--port", str(port)]
            child = Child(argv, env, logs / f"baseline{n}.log")
        children.append(child)
        ports.append(port)
    for child, port in zip(children, ports, strict=True):
        wait_for(f"{kind} on port {port}", lambda c=child, p=port: c.check() or port_open(p))
    return children, ports


def check_invoices(engine: Any, created: list[dict[str, Any]]) -> list[str]:
    """Errors: every 201 is one stored invoice, each with its own address and HD index."""
    with engine.connect() as conn:
        stored, addresses, indexes, deposit = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT address_key), count(DISTINCT address_index), "
                "(SELECT count(*) FROM deposit_addresses) FROM invoices"
            )
        ).one()
    problems = []
    answered = {c["address"] for c in created}
    if stored != len(created):
        problems.append(f"{len(created)} invoices answered 201 but {stored} are stored")
    if not stored == addresses == indexes == deposit:
        problems.append(f"{stored} invoices but {addresses} distinct addresses, {indexes} indexes, {deposit} rows")
    if len(answered) != len(created):
        problems.append(f"{len(created)} invoices answered with {len(answered)} distinct addresses")
    return problems


def profile_creation(env: dict[str, str], api_key: str, count: int = 300) -> tuple[str, float, list[str]]:
    """cProfile of ``count`` creations through the route handler (one transaction each): the top
    lines, the SQL statements per creation and the statements of one creation."""
    os.environ.update(env)
    config = load_config()
    engine = make_engine(config.settings.database_url)
    context = AppContext(config=config, engine=engine, ledger=Ledger(config.networks))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(" ".join(str(a[2]).split())))
    body = InvoiceCreate(**BODY)

    def one() -> None:
        with session_scope(engine) as session:
            create_route(body, authenticate(session, api_key), session, context)

    one()
    statements.clear()
    one()
    single = list(statements)
    statements.clear()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        one()
    profiler.disable()
    per = len(statements) / count
    engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return out.getvalue(), per, single


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--invoices", type=int, default=3000, help="timed requests per round and server")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="alternate baseline and paywatch; report the best")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--compare-with", metavar="SRC", help="another checkout's src folder, measured in the same rounds"
    )
    args = parser.parse_args()
    with fresh_database(args.database, "pw_scale_api") as url, tempfile.TemporaryDirectory() as tmp:
        return run(args, url, Path(tmp))


def run(args: argparse.Namespace, url: str, tmp: Path) -> int:
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(CREATE_TABLE))
    anvil = start_anvil()
    children: list[Child] = []
    try:
        env = environment(url, write_networks(tmp, anvil.url))
        made = subprocess.run(
            [sys.executable, "-m", "paywatch", "store", "create", "bench", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        headers = {"X-Api-Key": json.loads(made.stdout)["api_key"]}
        tip = feed_lag_guard(env, engine, tmp)
        baseline_procs, baseline_ports = start_servers("baseline", env, tmp)
        paywatch_procs, paywatch_ports = start_servers("paywatch", env, tmp)
        children = baseline_procs + paywatch_procs
        other_procs: list[Child] = []
        if args.compare_with:
            other_env = {**env, "PYTHONPATH": os.pathsep.join([str(Path(args.compare_with).resolve()), str(ROOT)])}
            other_procs, other_ports = start_servers("paywatch-other", other_env, tmp)
            children += other_procs
        warmup = max(50, args.concurrency * 2)
        base_rounds: list[Round] = []
        pw_rounds: list[Round] = []
        other_rounds: list[Round] = []
        for _ in range(args.rounds):
            base_rounds.append(measured(baseline_procs, baseline_ports, args, warmup, {}))
            if other_procs:
                other_rounds.append(measured(other_procs, other_ports, args, warmup, headers))
            pw_rounds.append(measured(paywatch_procs, paywatch_ports, args, warmup, headers))
        for child in children:
            child.check()
    finally:
        for child in children:
            child.close()
        anvil.close()
    errors = [e for r in base_rounds + pw_rounds for e in r.errors]
    created = [c for r in pw_rounds + other_rounds for c in r.created]
    errors += check_invoices(engine, created)
    with engine.connect() as conn:
        baseline_rows = conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    engine.dispose()
    best_base = max(base_rounds, key=lambda r: r.rate)
    best_pw = max(pw_rounds, key=lambda r: r.rate)
    ratio = best_pw.rate / best_base.rate
    print(f"two API processes on PostgreSQL, {args.concurrency} requests in flight, {args.invoices} per round")
    print(f"lag guard fed by one worker scan (tip {tip}); rate limit raised to {RATE_ENV}")
    print("load average at the end: " + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
    print(
        f"\n{'server':<34} | {'invoices/s':>10} | {'rounds':>17} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'server CPU ms/request (rounds)':>30}"
    )
    table = [
        ("baseline: bare FastAPI + 1 INSERT", base_rounds, best_base),
        ("paywatch: POST /v1/invoices", pw_rounds, best_pw),
    ]
    if other_rounds:
        table.append(
            (
                f"--compare-with {Path(args.compare_with).parent.name}",
                other_rounds,
                max(other_rounds, key=lambda r: r.rate),
            )
        )
    for name, rounds, best in table:
        spread = ", ".join(f"{r.rate:.0f}" for r in rounds)
        cpu = ", ".join(f"{r.cpu_ms:.2f}" for r in rounds)
        print(f"{name:<34} | {best.rate:>10.0f} | {spread:>17} | {best.p50_ms:>7.1f} | {best.p99_ms:>7.1f} | {cpu:>30}")
    print(f"\npaywatch / baseline: {ratio:.2f} (goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'MISSED'})")
    met = best_pw.rate >= GOAL_RATE
    print(f"paywatch invoices/s: {best_pw.rate:.0f} (goal >= {GOAL_RATE:.0f}: {'met' if met else 'MISSED'})")
    print(
        f"median over rounds: baseline {statistics.median(r.rate for r in base_rounds):.0f}, "
        f"paywatch {statistics.median(r.rate for r in pw_rounds):.0f}"
    )
    print(
        f"checked: {len(created)} invoices created, {len({c['address'] for c in created})} distinct addresses; "
        f"baseline rows {baseline_rows}"
    )
    if not args.no_profile:
        top, per, single = profile_creation(environment(url, tmp / "networks.yaml"), headers["X-Api-Key"])
        print(
            f"\nprofile of the creation path (route handler + its transaction, in this process): "
            f"{per:.1f} SQL statements per invoice"
        )
        for sql in single:
            print("  SQL " + sql[:150])
        print("\n".join(top.splitlines()[:45]))
    for problem in errors[:20]:
        print("ERROR " + problem)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
