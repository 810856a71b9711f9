"""Benchmark: the production Tron adapter reading mainnet-shaped blocks from the local node.

Each block holds ``--tokens`` successful USDT transfers (about 300 on mainnet at busy times),
``--trx`` TRX transfers and ``--failed`` reverted USDT calls. The node (tests/support/tron_node.py) runs in
a child process so that the peak RSS printed is the adapter's own. Printed: blocks/s without a
request budget, HTTP calls per block (target 2: the block and its transaction infos), peak RSS,
blocks/s under the default budget of 10 requests per second, and blocks/s through the real
scanner into SQLite with one open invoice per paid address (5 payments per block).

The raw baseline makes the same two calls per block over httpx and decodes the JSON with the
standard ``json`` module, nothing else, once one block at a time (the first 50 blocks) and once with
the adapter's FETCH_CONCURRENCY blocks in flight. A second raw baseline decodes the same answers
with the decoder the adapter uses (msgspec into paywatch.chains.tron_wire's structs), so that the
scanner is also compared with a raw client as fast at decoding as itself. The scanner (persistence
included) is reported as a ratio of each concurrent raw run (goal >= 0.7 against the standard one),
in interleaved runs: raw, scanner without invoices, raw, scanner with invoices paid, raw, ... (each
"raw" is both baselines back to back); each scanner run is divided by the mean of the raw runs
either side of it, so that both see the same machine state. Each run reads ``--blocks`` blocks
(200: a few seconds, so one scheduling hiccup says little); the ratio of every run and the median
and spread over ``--rounds`` are printed. ``--profile`` prints the cProfile of the first paid
scanner run (the scanner's own thread: persistence; the reads run in the adapter's threads).

    python bench/tron_scan.py [--blocks 200] [--tokens 300] [--trx 100] [--failed 5] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from statistics import median

from sqlmodel import col, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import httpx  # noqa: E402
from tests.conftest import TRON_XPUB  # noqa: E402
from tests.support.tron_node import (  # noqa: E402
    USDT,
    SimTx,
    TronChain,
    TronNode,
    address_of,
    trc20_transfer,
    tron_network,
    trx_transfer,
)

from paywatch.chains.tron import FETCH_CONCURRENCY, TronAdapter  # noqa: E402
from paywatch.chains.tron_http import RetryPolicy  # noqa: E402
from paywatch.chains.tron_wire import BLOCK, BLOCK_INFOS  # noqa: E402
from paywatch.config import AppConfig, Settings  # noqa: E402
from paywatch.invoices import InvoiceRequest, create_invoice  # noqa: E402
from paywatch.keys import derive_address  # noqa: E402
from paywatch.ledger import Ledger  # noqa: E402
from paywatch.scanner import Scanner  # noqa: E402
from paywatch.store.db import make_engine, session_scope, upgrade  # noqa: E402
from paywatch.store.models import Invoice  # noqa: E402
from paywatch.stores import create_store  # noqa: E402

PAYMENTS_PER_BLOCK = 5  # transfers to invoice addresses (HD indexes 1, 2, ...) in every block
OPENED = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)  # when the bench's invoices are created


def invoice_address(index: int) -> str:
    return derive_address(TRON_XPUB, "tron", index)


def build_chain(blocks: int, tokens: int, trx: int, failed: int, seed: int = 7) -> TronChain:
    rng = random.Random(seed)
    people = [address_of(f"user {i}") for i in range(2000)]
    chain = TronChain()
    for number in range(blocks):
        txs: list[SimTx] = [
            trc20_transfer(USDT, rng.choice(people), invoice_address(number * PAYMENTS_PER_BLOCK + k + 1), 10**6)
            for k in range(PAYMENTS_PER_BLOCK)
        ]
        for _ in range(tokens):
            txs.append(trc20_transfer(USDT, rng.choice(people), rng.choice(people), rng.randint(1, 10**10)))
        for _ in range(trx):
            txs.append(trx_transfer(rng.choice(people), rng.choice(people), rng.randint(1, 10**9)))
        for _ in range(failed):
            txs.append(trc20_transfer(USDT, rng.choice(people), rng.choice(people), 5, result="REVERT"))
        rng.shuffle(txs)
        chain.mine(*txs)
    chain.solidify(chain.head)
    return chain


def serve_chain(args: argparse.Namespace, conn: Connection) -> None:
    chain = build_chain(args.blocks, args.tokens, args.trx, args.failed)
    node = TronNode(chain)
    node.record_requests = False
    for number in range(chain.head - args.blocks + 1, chain.head + 1):  # serialise once, before timing
        node.respond("wallet/getblockbynum", {"num": number, "visible": False})
        node.respond("wallet/gettransactioninfobyblocknum", {"num": number})
    conn.send((node.url, chain.head - args.blocks + 1, chain.head))
    conn.recv()  # until the parent is done
    node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--trx", type=int, default=100)
    parser.add_argument("--failed", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10, help="blocks per fetch_range call (the scanner's batch)")
    parser.add_argument("--budget-blocks", type=int, default=10, help="blocks read under the 10 req/s budget")
    parser.add_argument("--no-scanner", action="store_true", help="skip the run through the scanner and SQLite")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of raw and scanner runs")
    parser.add_argument("--profile", action="store_true", help="cProfile the first scanner run with invoices paid")
    args = parser.parse_args()

    parent, child = mp.get_context("fork").Pipe()
    process = mp.get_context("fork").Process(target=serve_chain, args=(args, child), daemon=True)
    began = time.perf_counter()
    process.start()
    url, first, last = parent.recv()
    print(
        f"node ready in {time.perf_counter() - began:.1f} s: blocks {first}..{last}, "
        f"{args.tokens} USDT + {args.trx} TRX + {args.failed} failed transactions per block"
    )
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    watched = {address_of(f"user {i}") for i in range(0, 2000, 50)}  # 40 of the 2000 actors are ours
    try:
        adapter = TronAdapter(
            tron_network([url], requests_per_second=1_000_000), policy=RetryPolicy(attempts=2, timeout=60)
        )
        transfers = 0
        began = time.perf_counter()
        for start in range(first, last + 1, args.batch):
            scanned = adapter.fetch_range(start, min(last, start + args.batch - 1), watched.__contains__)
            transfers += len(scanned.transfers)
        elapsed = time.perf_counter() - began
        elapsed_unthrottled = elapsed
        blocks = last - first + 1
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"unthrottled: {blocks} blocks in {elapsed:.2f} s = {blocks / elapsed:.1f} blocks/s, "
            f"{transfers / elapsed:,.0f} transfers/s ({transfers} reported)"
        )
        print(f"HTTP calls per block: {adapter.http.calls / blocks:.2f}")
        print(f"peak RSS of the scanning process: {peak_mb:.0f} MB ({baseline_mb:.0f} MB after imports)")
        adapter.close()

        budgeted = TronAdapter(tron_network([url], requests_per_second=10), policy=RetryPolicy(attempts=2, timeout=60))
        n = min(args.budget_blocks, blocks)
        began = time.perf_counter()
        budgeted.fetch_range(first, first + n - 1, watched.__contains__)
        elapsed = time.perf_counter() - began
        print(
            f"default budget (10 req/s): {n} blocks in {elapsed:.2f} s = {n / elapsed:.2f} blocks/s "
            f"(mainnet makes one block per 3 s = 0.33 blocks/s)"
        )
        budgeted.close()
        raw_one = raw_baseline(url, first, min(last, first + 49), 1)
        raw_many = raw_baseline(url, first, last, FETCH_CONCURRENCY)
        raw_typed = raw_baseline(url, first, last, FETCH_CONCURRENCY, typed=True)
        print(f"raw httpx + JSON decode, one block at a time (50 blocks): {raw_one:.1f} blocks/s")
        print(f"raw httpx + JSON decode, {FETCH_CONCURRENCY} blocks in flight: {raw_many:.1f} blocks/s")
        print(f"raw httpx + msgspec decode (the adapter's), {FETCH_CONCURRENCY} in flight: {raw_typed:.1f} blocks/s")
        print(
            f"adapter / raw ({FETCH_CONCURRENCY} in flight): {blocks / elapsed_unthrottled / raw_many:.2f} "
            f"(json), {blocks / elapsed_unthrottled / raw_typed:.2f} (msgspec)"
        )
        if not args.no_scanner:
            compare_scanner(url, first, last, args)
    finally:
        parent.send("done")
        process.join(timeout=10)


def block_body(number: int) -> dict[str, object]:
    return {"num": number, "visible": False}


def raw_baseline(url: str, first: int, last: int, concurrency: int, *, typed: bool = False) -> float:
    """Blocks/s of the same two calls per block over one httpx client, JSON decoded, nothing else:
    with the standard ``json`` module, or (``typed``) with the adapter's msgspec decoders."""
    with httpx.Client(timeout=60) as client:

        def read(number: int) -> int:  # each answer decoded as soon as it is in, as the adapter does
            if typed:
                wire = BLOCK.decode(client.post(f"{url}/wallet/getblockbynum", json=block_body(number)).content)
                infos = BLOCK_INFOS.decode(
                    client.post(f"{url}/wallet/gettransactioninfobyblocknum", json={"num": number}).content
                )
                return len(wire.transactions or ()) + len(infos)
            block = client.post(f"{url}/wallet/getblockbynum", json=block_body(number)).json()
            infos = client.post(f"{url}/wallet/gettransactioninfobyblocknum", json={"num": number}).json()
            return len(block.get("transactions", ())) + len(infos)

        began = time.perf_counter()
        if concurrency == 1:
            for number in range(first, last + 1):
                read(number)
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(read, range(first, last + 1)))
        return (last - first + 1) / (time.perf_counter() - began)


def compare_scanner(url: str, first: int, last: int, args: argparse.Namespace) -> None:
    """Interleaved runs: raw, scanner (no invoice), raw, scanner (invoices paid), raw, scanner (no
    invoice), ...; each scanner run is compared with the mean of the raw runs either side of it, so
    both see the same machine state. The databases are prepared once and copied for every run."""
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(url, first, args, Path(tmp))
        templates = {paid: prepare_database(Path(tmp), config, last - first + 1, paid=paid) for paid in (False, True)}
        ratios: dict[tuple[bool, bool], list[float]] = {(p, t): [] for p in (False, True) for t in (False, True)}

        def both_raws() -> tuple[float, float]:
            return raw_baseline(url, first, last, FETCH_CONCURRENCY), raw_baseline(
                url, first, last, FETCH_CONCURRENCY, typed=True
            )

        raws = [both_raws()]
        for number in range(1, args.rounds + 1):
            for paid in (False, True):
                profile = args.profile and paid and number == 1
                rate = scan_with_database(config, templates[paid], Path(tmp), first, last, paid=paid, profile=profile)
                raws.append(both_raws())
                (json_before, typed_before), (json_after, typed_after) = raws[-2], raws[-1]
                ratio = rate / ((json_before + json_after) / 2)
                ratio_typed = rate / ((typed_before + typed_after) / 2)
                ratios[paid, False].append(ratio)
                ratios[paid, True].append(ratio_typed)
                print(
                    f"round {number}, {'5 invoices paid per block' if paid else 'no invoice paid'}: "
                    f"scanner {rate:.1f} blocks/s; raw json either side {json_before:.1f} / {json_after:.1f} "
                    f"blocks/s, ratio {ratio:.2f}; raw msgspec either side {typed_before:.1f} / {typed_after:.1f} "
                    f"blocks/s, ratio {ratio_typed:.2f}"
                )
        for paid, label in ((False, "no invoice paid"), (True, "5 invoices completed per block")):
            for typed, decoder in ((False, "json"), (True, "msgspec")):
                got = sorted(ratios[paid, typed])
                print(
                    f"scanner + SQLite / raw {decoder} ({FETCH_CONCURRENCY} in flight), {label}: "
                    f"median {median(got):.2f}, min {got[0]:.2f}, max {got[-1]:.2f} over {len(got)} rounds"
                    + (" (goal >= 0.7)" if not typed else "")
                )


def bench_config(url: str, first: int, args: argparse.Namespace, folder: Path) -> AppConfig:
    network = tron_network(
        [url], xpub=TRON_XPUB, start_block=first, batch_blocks=args.batch, requests_per_second=1_000_000
    )
    database = f"sqlite:///{folder}/unused.db"
    return AppConfig(Settings(database_url=database, networks=folder / "networks.yaml"), {"tron": network})


def prepare_database(folder: Path, config: AppConfig, blocks: int, *, paid: bool) -> Path:
    """A migrated SQLite database with one open USDT invoice per paid address (``paid``) or none."""
    path = folder / f"template-{'paid' if paid else 'quiet'}.db"
    db_url = f"sqlite:///{path}"
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        store = create_store(session, "bench", OPENED).store
        for _ in range(blocks * PAYMENTS_PER_BLOCK if paid else 0):
            create_invoice(session, config, store, InvoiceRequest("tron", "USDT", "1"), OPENED)
    engine.dispose()
    return path


def scan_with_database(
    config: AppConfig, template: Path, folder: Path, first: int, last: int, *, paid: bool, profile: bool = False
) -> float:
    """Blocks/s of the blocks through the real Scanner into a copy of ``template`` (SQLite): with
    one open invoice per paid address (``paid``), else only the block hashes and the cursor are stored."""
    path = folder / "run.db"
    shutil.copyfile(template, path)
    engine = make_engine(f"sqlite:///{path}")
    network = config.networks["tron"]
    adapter = TronAdapter(network, policy=RetryPolicy(attempts=2, timeout=60))
    scanner = Scanner(network, adapter, engine, Ledger(config.networks), lambda: OPENED + timedelta(hours=2))
    profiler = cProfile.Profile() if profile else None
    blocks = last - first + 1
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    results = scanner.run_until_caught_up(max_steps=10_000)
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - began
    matched = sum(r.matched for r in results)
    with session_scope(engine) as session:
        completed = session.exec(select(func.count()).where(col(Invoice.status) == "COMPLETED")).one()
    expected = blocks * PAYMENTS_PER_BLOCK if paid else 0
    if matched != expected or completed != expected:
        raise SystemExit(f"scanner run: {matched} matched, {completed} COMPLETED, {expected} of each expected")
    scanner.close()
    adapter.close()
    engine.dispose()
    path.unlink()
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print(f"profile of the scanner's own thread, {blocks} blocks, invoices paid:\n{out.getvalue()}")
    return blocks / elapsed


if __name__ == "__main__":
    main()
