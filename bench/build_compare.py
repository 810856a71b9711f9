"""Benchmark (part of issue 14's scale proof): the watch index build, the current code against the
code before issue 14's watch index work, measured in the same run on PostgreSQL.

    .venv/bin/python bench/build_compare.py [--database postgresql://127.0.0.1:5432/test] [--sizes 100000,300000]
        [--rounds 3] [--profile]

A fresh database is created next to ``--database`` (and dropped afterwards). Invoices (open,
address strategy, half ETH half USDT, random ids and addresses like the API's) are written by one
``INSERT ... SELECT generate_series`` per step up to each size, then ANALYZEd and VACUUMed. At each
size, interleaved rounds (``--rounds``, best of) time:

* **old**: ``build_watch_index`` as it was before the paged build (one query, then ``Watch``
  objects), copied below as the baseline;
* **new**: :func:`paywatch.addresses.load_watch_index` as the scanner calls it (pages of
  ``WATCH_PAGE`` invoices, each in a read-only transaction of its own).

Each is split into the SQL fetch (rows in Python) and the index building (Python). ``--profile``
adds a cProfile of one new build at the largest size (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.procs import fresh_database  # noqa: E402
from bench.seed import add_store, seed_series  # noqa: E402

from paywatch import addresses  # noqa: E402
from paywatch.addresses import ANY_STRATEGY, load_watch_index, min_amounts, shared_address  # noqa: E402
from paywatch.config import NetworkConfig  # noqa: E402
from paywatch.domain.matching import Strategy, Watch, WatchIndex  # noqa: E402
from paywatch.store.db import make_engine, read_scope, upgrade  # noqa: E402
from paywatch.store.models import Invoice, Store, StoreAddress  # noqa: E402

TOKEN = "0x" + "5a" * 20


# --- Old-code baseline: build_watch_index of commit 0108ae6 (src/paywatch/addresses.py), copied
# --- verbatim except for the `marks` argument, which records when the fetch ended. Not used by paywatch.
def old_build_watch_index(session: Session, network: NetworkConfig, marks: list[float]) -> WatchIndex:
    """Every address paywatch issued on ``network`` plus its shared address, with their invoices."""
    index = WatchIndex(min_amounts=min_amounts(network))
    shared = shared_address(network)
    if shared is not None:
        index.add_shared(shared)
    own = session.exec(
        select(StoreAddress.address, StoreAddress.strategy).where(StoreAddress.network == network.name)
    ).all()
    for address, strategy in own:
        index.add_shared(address, strategy=None if strategy == ANY_STRATEGY else Strategy(strategy))
    rows: Sequence[Any] = (
        session.connection()
        .execute(
            sa_select(
                *(
                    col(column)
                    for column in (
                        Invoice.id,
                        Invoice.match_strategy,
                        Invoice.address,
                        Invoice.asset_key,
                        Invoice.memo,
                        Invoice.open_amount,
                        Invoice.expires_at,
                        Store.late_window_seconds,
                    )
                )
            )
            .join(Store, col(Store.id) == col(Invoice.store_id))
            .where(col(Invoice.network) == network.name)
        )
        .all()
    )
    marks.append(time.perf_counter())
    for inv_id, strategy, address, asset_key, memo, open_amount, expires_at, late_window in rows:
        deadline = int((expires_at + timedelta(seconds=late_window)).timestamp())
        if strategy == Strategy.ADDRESS:
            index.add_address(address, Watch(inv_id, asset_key, deadline))
        elif strategy == Strategy.MEMO and memo:
            index.add_memo(address, memo, Watch(inv_id, asset_key, deadline))
        elif strategy == Strategy.AMOUNT:
            if open_amount is not None:
                index.add_amount(address, Watch(inv_id, asset_key, deadline, open_amount))
            else:
                index.add_shared(address)
    return index


# --- end of the old-code baseline


def bench_network() -> NetworkConfig:
    """The bench network (the RPC URL is never used)."""
    from bench.evm_scan import network_config

    return network_config("http://127.0.0.1:1", TOKEN, 0)


class Timed:
    """Wraps a module function, summing the seconds spent in it."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.inner = module, name, getattr(module, name)
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began

    def __enter__(self) -> Timed:
        setattr(self.module, self.name, self)
        return self

    def __exit__(self, *_exc: object) -> None:
        setattr(self.module, self.name, self.inner)


def time_old(engine: Engine, network: NetworkConfig) -> tuple[float, float, int]:
    marks = [time.perf_counter()]
    with read_scope(engine) as session:
        index = old_build_watch_index(session, network, marks)
    ended = time.perf_counter()
    return marks[1] - marks[0], ended - marks[1], len(index)


def time_new(engine: Engine, network: NetworkConfig) -> tuple[float, float, int]:
    with Timed(addresses, "watch_rows") as fetch:
        began = time.perf_counter()
        index = load_watch_index(lambda: read_scope(engine), network)
        total = time.perf_counter() - began
    return fetch.seconds, total - fetch.seconds, len(index)


def best_of(rounds: int, builds: dict[str, Callable[[], tuple[float, float, int]]]) -> dict[str, list[float]]:
    """Interleaved rounds; per build the round of least total time, as (total, fetch, build)."""
    best: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, build in builds.items():
            gc.collect()
            fetch, python, _count = build()
            gc.collect()
            if name not in best or fetch + python < best[name][0]:
                best[name] = [fetch + python, fetch, python]
    return best


def profile(engine: Engine, network: NetworkConfig) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    load_watch_index(lambda: read_scope(engine), network)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with fresh_database(args.database, "pw_build") as url:
        upgrade(url)
        engine = make_engine(url)
        run(engine, sizes, args.rounds, args.profile)
        engine.dispose()
    return 0


def run(engine: Engine, sizes: list[int], rounds: int, with_profile: bool) -> None:
    network = bench_network()
    add_store(engine, datetime.now(UTC))
    print(f"best of {rounds} interleaved rounds; seconds (fetch = SQL rows into Python, build = the index)")
    print(
        f"{'invoices':>10} | {'seed s':>6} | {'old total':>9} | {'old fetch':>9} | {'old build':>9} | "
        f"{'new total':>9} | {'new fetch':>9} | {'new build':>9} | {'new/old':>7}"
    )
    done = 0
    for size in sizes:
        began = time.perf_counter()
        step = 100_000
        while done < size:
            upto = min(done + step, size)
            seed_series(engine, done + 1, upto, TOKEN, datetime.now(UTC))
            done = upto
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE invoices"))
        seeded = time.perf_counter() - began
        best = best_of(
            rounds,
            {"old": lambda: time_old(engine, network), "new": lambda: time_new(engine, network)},
        )
        old, new = best["old"], best["new"]
        print(
            f"{size:>10,} | {seeded:>6.1f} | {old[0]:>9.2f} | {old[1]:>9.2f} | {old[2]:>9.2f} | "
            f"{new[0]:>9.2f} | {new[1]:>9.2f} | {new[2]:>9.2f} | {new[0] / old[0]:>7.2f}",
            flush=True,
        )
    explain_page(engine, network)
    if with_profile:
        profile(engine, network)


def explain_page(engine: Engine, network: NetworkConfig) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the page a build reads halfway through the table."""
    with read_scope(engine) as session:
        middle = addresses.watch_rows(session, network, limit=done_half(engine))[-1]
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with read_scope(engine) as session:
            addresses.watch_rows(session, network, after=(middle[-1], middle[0]), limit=addresses.WATCH_PAGE)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = statements[-1]
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of a page halfway:\n  {statement}")
    with engine.connect() as conn:
        for (line,) in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters):
            print("  " + line)


def done_half(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM invoices")).scalar_one()) // 2


if __name__ == "__main__":
    raise SystemExit(main())
