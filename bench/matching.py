"""Benchmark the WatchIndex that matching uses, at 1,000,000 watched addresses.

    PYTHONPATH=src python bench/matching.py [--addresses 1000000] [--lookups 1000000] [--db-rows 1000000]

Watched: per-invoice addresses plus shared addresses carrying memos and unique amounts. Prints,
for paywatch's index and, as the same-run baseline, a plain ``dict[str, Watch]`` index (what the
first version did):
  - lookups/s of ``match_all`` over random transfers, 1% of them to watched addresses (one core);
  - the index's memory (tracemalloc: what the index holds after it is built);
  - the time to rebuild the index from the database (SQLite file; PostgreSQL with --pg URL).
Targets: >= 200,000 lookups/s, <= 200 MB.
"""

from __future__ import annotations

import argparse
import gc
import random
import secrets
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import insert

from paywatch.addresses import build_watch_index
from paywatch.config import NetworkConfig
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason, Watch, WatchIndex
from paywatch.domain.transfer import NATIVE, Transfer, address_key
from paywatch.store.db import make_engine, session_scope, upgrade
from paywatch.store.models import Invoice, Store

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
SHARED_ADDRESSES = 10_000
MEMOS_PER_SHARED = 5
AMOUNTS_PER_SHARED = 5
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = int((T0 + timedelta(days=9)).timestamp())


class Index(Protocol):
    def add_address(self, address: str, watch: Watch) -> None: ...
    def add_memo(self, address: str, memo: str, watch: Watch) -> None: ...
    def add_amount(self, address: str, watch: Watch) -> None: ...
    def match_all(self, transfers: list[Transfer]) -> tuple[list[Match], list[Unmatched]]: ...


class NaiveIndex:
    """Baseline: one ``Watch`` object per address in a ``dict[str, Watch]`` (the first version)."""

    def __init__(self) -> None:
        self._by_address: dict[str, Watch] = {}
        self._memos: dict[str, dict[str, Watch]] = {}
        self._amounts: dict[str, dict[tuple[str, int], Watch]] = {}

    def add_address(self, address: str, watch: Watch) -> None:
        self._by_address[address_key(address)] = watch

    def add_memo(self, address: str, memo: str, watch: Watch) -> None:
        self._memos.setdefault(address_key(address), {})[memo] = watch

    def add_amount(self, address: str, watch: Watch) -> None:
        self._amounts.setdefault(address_key(address), {})[(watch.asset_key, watch.amount)] = watch

    def match_all(self, transfers: list[Transfer]) -> tuple[list[Match], list[Unmatched]]:
        matches: list[Match] = []
        unmatched: list[Unmatched] = []
        for t in transfers:
            if not t.success or t.amount <= 0:
                continue
            key = t.to_key
            watch = self._by_address.get(key)
            if watch is None:
                amounts = self._amounts.get(key)
                if amounts is None:
                    continue
                watch = amounts.get((t.asset_key, t.amount))
                if watch is None:
                    unmatched.append(Unmatched(t, UnmatchedReason.NO_AMOUNT_MATCH))
                    continue
            if t.asset_key == watch.asset_key and t.block_time.timestamp() <= watch.deadline:
                matches.append(Match(t, watch.invoice_id))
            else:
                unmatched.append(Unmatched(t, UnmatchedReason.ASSET_MISMATCH, watch.invoice_id))
        return matches, unmatched


def _address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def watch_rows(n: int, seed: int = 1) -> Iterator[tuple[str, str, str, str | None, int]]:
    """(strategy, address, invoice id, memo, amount) rows, created fresh like a DB cursor would."""
    rng = random.Random(seed)
    shared = [_address(rng) for _ in range(SHARED_ADDRESSES)]
    per_invoice = n - SHARED_ADDRESSES
    for i in range(per_invoice):
        yield "address", _address(rng), "inv_" + rng.randbytes(10).hex(), None, i
    for address in shared:
        for k in range(MEMOS_PER_SHARED):
            yield "memo", address, "inv_" + rng.randbytes(10).hex(), f"M{rng.randrange(10**9):09d}{k}", 0
        for k in range(AMOUNTS_PER_SHARED):
            yield "amount", address, "inv_" + rng.randbytes(10).hex(), None, 1_000_000 + k + 1


def build(factory: Callable[[], Index], n: int) -> tuple[Index, float, float, list[str]]:
    """Build an index from fresh rows; return it, seconds, traced MB held, and a sample of addresses."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    index = factory()
    sample: list[str] = []
    for j, (strategy, address, invoice_id, memo, amount) in enumerate(watch_rows(n)):
        asset = NATIVE if j % 2 else USDT
        if strategy == "address":
            index.add_address(address, Watch(invoice_id, asset, DEADLINE))
            if j % 97 == 0:
                sample.append(address)
        elif strategy == "memo" and memo is not None:
            index.add_memo(address, memo, Watch(invoice_id, USDT, DEADLINE))
        else:
            index.add_amount(address, Watch(invoice_id, USDT, DEADLINE, amount))
    seconds = time.perf_counter() - started
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    tracemalloc.stop()
    sample_copy = [str(s) for s in sample]  # allocated after tracing stopped
    return index, seconds, held, sample_copy


def transfers(count: int, watched: list[str], hit_rate: float, seed: int = 2) -> list[Transfer]:
    rng = random.Random(seed)
    out = []
    when = T0 + timedelta(hours=1)
    for i in range(count):
        to = rng.choice(watched) if rng.random() < hit_rate else _address(rng)
        if rng.random() < 0.5:
            to = to.upper().replace("0X", "0x")  # node output in any letter case
        out.append(Transfer("ethereum", f"0x{i:064x}", i % 7, 1, "0xb", when, "0xf", to, USDT if i % 2 else NATIVE, 5))
    return out


def lookups_per_second(index: Index, batch: list[Transfer]) -> tuple[float, int]:
    gc.collect()
    started = time.perf_counter()
    matches, unmatched = index.match_all(batch)
    seconds = time.perf_counter() - started
    return len(batch) / seconds, len(matches) + len(unmatched)


def rebuild_from_db(url: str, rows: int) -> tuple[float, int, float]:
    """Insert ``rows`` invoices (bulk, not timed), then time build_watch_index. Returns (s, size, insert s)."""
    upgrade(url)
    engine = make_engine(url)
    network = NetworkConfig.model_validate(
        {
            "name": "ethereum",
            "family": "evm",
            "chain_id": 1,
            "rpc_urls": ["http://127.0.0.1:1"],
            "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": USDT, "decimals": 6}},
        }
    )
    started = time.perf_counter()
    with session_scope(engine) as s:
        store = Store(
            id="st_bench", name="bench", api_key_hash=secrets.token_hex(32), webhook_secret="x", created_at=T0
        )
        s.add(store)
    base: dict[str, Any] = {
        "store_id": "st_bench",
        "network": "ethereum",
        "asset": "USDT",
        "asset_key": USDT,
        "decimals": 6,
        "amount": 5_000_000,
        "confirmations_required": 12,
        "status": "PENDING",
        "status_version": 1,
        "flags": [],
        "amount_paid": 0,
        "amount_confirmed": 0,
        "expires_at": T0 + timedelta(days=1),
        "created_at": T0,
        "updated_at": T0,
        "metadata": {},
    }
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for strategy, address, invoice_id, memo, amount in watch_rows(rows, seed=3):
            row = dict(base, id=invoice_id, match_strategy=strategy, address=address, address_key=address)
            row["memo"] = memo if strategy == "memo" else None
            row["open_amount"] = amount if strategy == "amount" else None
            if strategy == "amount":
                row["amount"] = amount
            chunk.append(row)
            if len(chunk) == 20_000:
                conn.execute(insert(Invoice), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(Invoice), chunk)
    inserted = time.perf_counter() - started
    gc.collect()
    started = time.perf_counter()
    with session_scope(engine) as s:
        index = build_watch_index(s, network)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, len(index), inserted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--db-rows", type=int, default=1_000_000, help="0 skips the rebuild-from-DB figure")
    parser.add_argument("--pg", help="also time the rebuild on this PostgreSQL URL (an EMPTY scratch database)")
    args = parser.parse_args(argv)

    print(
        f"watched addresses: {args.addresses:,} ({SHARED_ADDRESSES:,} shared, each with "
        f"{MEMOS_PER_SHARED} memos and {AMOUNTS_PER_SHARED} unique amounts); lookups: {args.lookups:,}, 1% hits"
    )
    results: dict[str, tuple[float, float, float]] = {}
    for name, factory in (("paywatch WatchIndex", WatchIndex), ("baseline dict[str, Watch]", NaiveIndex)):
        index, build_s, held_mb, sample = build(factory, args.addresses)
        batch = transfers(args.lookups, sample, 0.01)
        rate, found = lookups_per_second(index, batch)
        results[name] = (rate, held_mb, build_s)
        print(
            f"{name:28s} lookups/s {rate:>12,.0f}  index memory {held_mb:7.1f} MB  build {build_s:5.2f} s"
            f"  (attributed or inboxed: {found:,})"
        )
        del index, batch, sample
        gc.collect()
    ours, naive = results["paywatch WatchIndex"], results["baseline dict[str, Watch]"]
    print(f"paywatch vs baseline: {ours[0] / naive[0]:.2f}x lookups/s, {ours[1] / naive[1]:.2f}x memory")
    print(
        f"targets: lookups/s >= 200,000 -> {'met' if ours[0] >= 200_000 else 'MISSED'}; "
        f"memory <= 200 MB -> {'met' if ours[1] <= 200 else 'MISSED'}"
    )
    if args.db_rows:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            seconds, size, inserted = rebuild_from_db(url, args.db_rows)
            print(
                f"rebuild from SQLite: {seconds:.2f} s for {size:,} watched addresses "
                f"({args.db_rows:,} invoices; inserting them took {inserted:.1f} s, not counted)"
            )
        if args.pg:
            seconds, size, inserted = rebuild_from_db(args.pg, args.db_rows)
            print(f"rebuild from PostgreSQL: {seconds:.2f} s for {size:,} watched addresses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
