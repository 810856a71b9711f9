"""Benchmark the EVM scanner on anvil against a raw fetch and a per-block web3 loop, in one run.

    PYTHONPATH=src:. python bench/evm_scan.py [--blocks 2000] [--watched 10000] [--rounds 3] [--no-web3]

Set-up: a fresh anvil; ``--blocks`` blocks of 5 transactions (3 native, 2 ERC-20 transfers),
``--watched`` watched addresses (invoices inserted in bulk into a SQLite file), 1% of the
transfers going to them. Then, over the same blocks, in ``--rounds`` interleaved rounds (each
round runs every line once, in a rotated order), best of each line compared:

  paywatch   the real Scanner (EvmAdapter + matching + ledger + SQLite), in a child process so that
             its peak RSS and CPU are its own (a fresh copy of the database each round);
  (a) raw    batched JSON-RPC over httpx: block bodies + eth_getLogs per 100 blocks, JSON decoded,
             nothing else, one request at a time (the limit; target: paywatch >= 0.85 of it);
  (a') bytes  the same batches over httpx, the body read as bytes and never decoded: the node and
             HTTP's own limit (set ``PAYWATCH_BENCH_PROFILE=file`` to write the scanner's cProfile);
  (b) web3   a per-block loop: ``w3.eth.get_block(n, True)`` and every receipt through web3, the way
             existing processors scan (target: paywatch >= 3x faster);
  (c) web3 batch  the same batches as paywatch, but through web3's formatting layer
             (``w3.batch_requests()``), to show what skipping it saves.
Also: every line's spread (best, median, worst), the CPU seconds of the client and of the node
(on a loaded machine the two share the cores, so the client's CPU slows the node), the ratio of
each round's pair, HTTP round trips per scanned block, the transfers found (checked against those
sent) and the scanner's peak RSS (target <= 250 MB).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from web3 import HTTPProvider, Web3

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.seed import add_store, insert_invoices, watched_invoice  # noqa: E402
from tests.support.evm_node import AnvilNode, artifact  # noqa: E402

from paywatch.chains.evm import TRANSFER_TOPIC, EvmAdapter  # noqa: E402
from paywatch.config import NetworkConfig  # noqa: E402
from paywatch.ledger import Ledger  # noqa: E402
from paywatch.scanner import Scanner  # noqa: E402
from paywatch.store.db import make_engine, session_scope, upgrade  # noqa: E402
from paywatch.store.models import Payment  # noqa: E402

CHUNK = 100


def network_config(url: str, token: str, start: int) -> NetworkConfig:
    return NetworkConfig.model_validate(
        {
            "name": "bench",
            "family": "evm",
            "chain_id": 31337,
            "rpc_urls": [url],
            "confirmations": 12,
            "start_block": start,
            "batch_blocks": CHUNK,
            "requests_per_second": 10_000,  # a local node
            "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": token, "decimals": 6}},
        }
    )


class Rpc:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=60)
        self.next_id = 0

    def call(self, method: str, *params: Any) -> Any:
        reply = self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        body = reply.json()
        if body.get("error"):
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        answers = sorted(self.http.post(self.url, json=payload).json(), key=lambda a: a["id"])
        for answer in answers:
            if answer.get("error"):
                raise RuntimeError(str(answer["error"]))
        return [a["result"] for a in answers]


def set_up(node: AnvilNode, blocks: int, watched_count: int, db_url: str) -> tuple[str, int, int, int]:
    """Deploy the token, write the invoices, mine the blocks; return (token, first, last, hits)."""
    token = deploy_token(node)
    rng = random.Random(11)
    watched = ["0x" + rng.randbytes(20).hex() for _ in range(watched_count)]
    now = datetime.now(UTC)
    upgrade(db_url)
    engine = make_engine(db_url)
    add_store(engine, now)
    rows = [
        watched_invoice(
            "inv_" + rng.randbytes(10).hex(),
            address,
            asset="USDT" if i % 2 else "ETH",
            asset_key=token if i % 2 else "native",
            decimals=6 if i % 2 else 18,
            amount=10**30,
            confirmations=12,
            now=now,
        )
        for i, address in enumerate(watched)
    ]
    insert_invoices(engine, rows)
    engine.dispose()
    first, last, hits = mine_blocks(node, token, blocks, watched, rng)
    return token, first, last, hits


def deploy_token(node: AnvilNode) -> str:
    """Deploy the test ERC-20 on ``node``; its address in lower case."""
    w3 = Web3(HTTPProvider(node.url))
    abi, bytecode = artifact("TestToken")
    tx = (
        w3.eth.contract(abi=abi, bytecode=bytecode)
        .constructor("Tether", "USDT", 6, 10**18)
        .transact({"from": w3.eth.accounts[0]})
    )
    return str(w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]).lower()


def mine_blocks(
    node: AnvilNode, token: str, blocks: int, watched: Sequence[str], rng: random.Random, hit_rate: float = 0.01
) -> tuple[int, int, int]:
    """Mine ``blocks`` blocks of 5 transactions (3 native, 2 token transfers), ``hit_rate`` of them
    to ``watched`` addresses; return (first, last, hits)."""
    rpc = Rpc(node.url)
    accounts = Web3(HTTPProvider(node.url)).eth.accounts
    rpc.call("evm_setAutomine", False)
    first = int(rpc.call("eth_blockNumber"), 16) + 1
    hits = 0
    for _ in range(blocks):
        calls: list[tuple[str, list[Any]]] = []
        for k in range(5):
            hit = rng.random() < hit_rate
            hits += hit
            to = rng.choice(watched) if hit else "0x" + rng.randbytes(20).hex()
            if k < 3:
                tx = {"from": accounts[1 + k], "to": to, "value": hex(rng.randrange(1, 10**15))}
            else:
                data = "0xa9059cbb" + to[2:].rjust(64, "0") + hex(rng.randrange(1, 10**9))[2:].rjust(64, "0")
                tx = {"from": accounts[0], "to": token, "data": data, "gas": hex(80_000)}
            calls.append(("eth_sendTransaction", [tx]))
        rpc.batch(calls)
        rpc.call("anvil_mine", "0x1")
    rpc.call("evm_setAutomine", True)
    last = int(rpc.call("eth_blockNumber"), 16)
    return first, last, hits


def raw_fetch(url: str, token: str, first: int, last: int) -> tuple[float, int]:
    """(a) block bodies and logs over httpx in batches, JSON decoded, nothing else."""
    rpc = Rpc(url)
    trips = 0
    started = time.perf_counter()
    for lo in range(first, last + 1, CHUNK):
        hi = min(last, lo + CHUNK - 1)
        for sub in range(lo, hi + 1, 25):
            rpc.batch([("eth_getBlockByNumber", [hex(n), True]) for n in range(sub, min(hi, sub + 24) + 1)])
            trips += 1
        query = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [token], "topics": [TRANSFER_TOPIC]}
        rpc.call("eth_getLogs", query)
        trips += 1
    return time.perf_counter() - started, trips


def bytes_fetch(url: str, token: str, first: int, last: int) -> float:
    """(a') the same batches as (a), the answers read as bytes and never decoded."""
    http = httpx.Client(timeout=60)
    started = time.perf_counter()
    for lo in range(first, last + 1, CHUNK):
        hi = min(last, lo + CHUNK - 1)
        for sub in range(lo, hi + 1, 25):
            payload = [
                {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(n), True]}
                for i, n in enumerate(range(sub, min(hi, sub + 24) + 1))
            ]
            _ = http.post(url, json=payload).content
        query = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [token], "topics": [TRANSFER_TOPIC]}
        _ = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [query]}).content
    return time.perf_counter() - started


def web3_per_block(url: str, first: int, last: int) -> float:
    """(b) per block: the block through web3, then every transaction's receipt through web3."""
    w3 = Web3(HTTPProvider(url))
    started = time.perf_counter()
    for n in range(first, last + 1):
        block = w3.eth.get_block(n, full_transactions=True)
        for tx in block["transactions"]:
            w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
    return time.perf_counter() - started


def web3_batched(url: str, token: str, first: int, last: int) -> float:
    """(c) paywatch's batches, but through web3's request formatting (``batch_requests``)."""
    w3 = Web3(HTTPProvider(url))
    started = time.perf_counter()
    for lo in range(first, last + 1, CHUNK):
        hi = min(last, lo + CHUNK - 1)
        for sub in range(lo, hi + 1, 25):
            with w3.batch_requests() as batch:
                for n in range(sub, min(hi, sub + 24) + 1):
                    batch.add(w3.eth.get_block(n, True))
                batch.execute()
        w3.eth.get_logs(
            {"fromBlock": lo, "toBlock": hi, "address": Web3.to_checksum_address(token), "topics": [TRANSFER_TOPIC]}
        )
    return time.perf_counter() - started


def scan_child(url: str, token: str, first: int, db_url: str) -> None:
    """Run in a child process: scan to the tip with the real Scanner; print JSON figures."""
    network = network_config(url, token, first)
    engine = make_engine(db_url)
    adapter = EvmAdapter(network)
    profile_to = os.environ.get("PAYWATCH_BENCH_PROFILE")  # profiled without the prefetch thread
    scanner = Scanner(
        network, adapter, engine, Ledger({network.name: network}), lambda: datetime.now(UTC), prefetch=not profile_to
    )
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    cpu = time.process_time()  # every thread of this process: the prefetch thread too
    started = time.perf_counter()
    results = scanner.run_until_caught_up()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    scanner.close()
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    with session_scope(engine) as s:
        payments = len(s.exec(Payment.__table__.select()).all())  # type: ignore[attr-defined]
    blocks = sum(r.blocks for r in results)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "blocks": blocks,
                "trips": adapter.rpc.round_trips,
                "payments": payments,
                "matched": sum(r.matched for r in results),
                "unmatched": sum(r.unmatched for r in results),
                "steps": len(results),
                "peak_mb": peak_mb,
            }
        )
    )


def node_cpu(pid: int) -> float:
    """CPU seconds the node process has used so far (0.0 where /proc is not available)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Line:
    """One benchmark line: its runs (seconds, this process's or the child's CPU, the node's CPU)."""

    def __init__(self, label: str, run: Callable[[], tuple[float, float]]) -> None:
        self.label = label
        self.run = run
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.node_cpu: list[float] = []

    def measure(self, node_pid: int) -> None:
        before = node_cpu(node_pid)
        seconds, cpu = self.run()
        self.node_cpu.append(node_cpu(node_pid) - before)
        self.seconds.append(seconds)
        self.cpu.append(cpu)

    def rates(self, blocks: int) -> list[float]:
        return [blocks / s for s in self.seconds]


def timed(fetch: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    cpu = time.process_time()
    started = time.perf_counter()
    fetch()
    return time.perf_counter() - started, time.process_time() - cpu


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[-1]:.0f} best, {statistics.median(ordered):.0f} median, {ordered[0]:.0f} worst"


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target}: {'met' if ratio >= target else 'MISSED'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--watched", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-web3", action="store_true", help="skip lines (b) and (c) (the slow web3 ones)")
    parser.add_argument("--scan-child", nargs=4, metavar=("URL", "TOKEN", "FIRST", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scan_child:
        url, token, first, db = args.scan_child
        scan_child(url, token, int(first), db)
        return 0

    node = AnvilNode("--gas-limit", "300000000").start()
    assert node.proc is not None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            started = time.perf_counter()
            token, first, last, hits = set_up(node, args.blocks, args.watched, db_url)
            blocks = last - first + 1
            print(
                f"set-up: {blocks} blocks x 5 txs (3 native, 2 ERC-20), {args.watched:,} watched addresses, "
                f"{hits} transfers to them ({time.perf_counter() - started:.1f} s)"
            )
            pristine = Path(tmp) / "bench.db"
            scans: list[dict[str, Any]] = []
            raw_trips: list[int] = []

            def scanner() -> tuple[float, float]:
                scan_db = Path(tmp) / f"scan{len(scans)}.db"
                shutil.copyfile(pristine, scan_db)
                child = subprocess.run(
                    [sys.executable, __file__, "--scan-child", node.url, token, str(first), f"sqlite:///{scan_db}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                scan_db.unlink()
                scans.append(json.loads(child.stdout.strip().splitlines()[-1]))
                return float(scans[-1]["seconds"]), float(scans[-1]["cpu"])

            def raw() -> tuple[float, float]:
                return timed(lambda: raw_trips.append(raw_fetch(node.url, token, first, last)[1]))

            ours = Line("paywatch scanner", scanner)
            raw_line = Line("(a) raw httpx batches", raw)
            bytes_line = Line(
                "(a') bytes only, no JSON decode", lambda: timed(lambda: bytes_fetch(node.url, token, first, last))
            )
            lines = [ours, raw_line, bytes_line]
            if not args.no_web3:
                lines.append(
                    Line("(b) web3 per-block loop", lambda: timed(lambda: web3_per_block(node.url, first, last)))
                )
                lines.append(
                    Line("(c) web3 batches", lambda: timed(lambda: web3_batched(node.url, token, first, last)))
                )
            for round_no in range(args.rounds):
                # Interleaved rounds, each in another order (the cores are shared; the load drifts).
                shift = round_no % len(lines)
                for line in lines[shift:] + lines[:shift]:
                    line.measure(node.proc.pid)
                print(
                    f"round {round_no + 1}: "
                    + ", ".join(f"{line.label.split(' ')[0]} {blocks / line.seconds[-1]:.0f}" for line in lines)
                    + " blocks/s",
                    flush=True,
                )
    finally:
        node.close()

    report(lines, scans, blocks, hits, raw_trips[0] if raw_trips else 0)
    return 0


def report(lines: list[Line], scans: list[dict[str, Any]], blocks: int, hits: int, raw_trips: int) -> None:
    """Print each line's best, median and worst, and the scanner's ratios (best to best, and per round)."""
    ours, raw_line, bytes_line = lines[:3]
    best = {line.label: max(line.rates(blocks)) for line in lines}
    ours_bps = best[ours.label]
    print(
        f"\nblocks/s over {len(ours.seconds)} interleaved rounds; CPU seconds (median) of the client and of the node:"
    )
    for line in lines:
        print(
            f"  {line.label:34} {spread(line.rates(blocks)):36} "
            f"client CPU {statistics.median(line.cpu):5.2f} s, node CPU {statistics.median(line.node_cpu):5.2f} s"
        )
    for base, target in ((raw_line, 0.85), (bytes_line, None)):
        ratio = ours_bps / best[base.label]
        per_round = [b / a for a, b in zip(ours.seconds, base.seconds, strict=True)]
        print(
            f"paywatch / {base.label.split(' ')[0]}: {ratio:.2f} best to best"
            + (f" ({verdict(ratio, target)})" if target else "")
            + f"; per round {', '.join(f'{r:.2f}' for r in per_round)} (median {statistics.median(per_round):.2f})"
        )
    print(f"raw / bytes: {best[raw_line.label] / best[bytes_line.label]:.2f} best to best")
    if len(lines) > 3:
        per_block, batched = lines[3], lines[4]
        speedup = ours_bps / best[per_block.label]
        print(f"paywatch / (b) web3 per-block loop: {speedup:.1f}x faster ({verdict(speedup, 3)})")
        print(
            f"(c) web3 batches: the same fetch unformatted (a) is {best[raw_line.label] / best[batched.label]:.2f}x "
            f"faster; the whole paywatch scanner is {ours_bps / best[batched.label]:.2f}x faster"
        )
    fastest = min(scans, key=lambda r: float(r["seconds"]))
    found = {(r["matched"], r["unmatched"]) for r in scans}
    print(
        f"scanner: {fastest['blocks']} blocks in {fastest['steps']} steps; {fastest['payments']} payments stored, "
        f"{fastest['matched']} matched + {fastest['unmatched']} unmatched transfers of {hits} sent to watched addresses"
        + ("" if len(found) == 1 and fastest["matched"] + fastest["unmatched"] == hits else " (MISMATCH between runs)")
    )
    print(
        f"HTTP round trips per scanned block: paywatch {fastest['trips'] / fastest['blocks']:.3f} "
        f"(raw baseline {raw_trips / blocks:.3f}; per-block loop 6.000; target <= 0.1)"
    )
    peak = max(float(r["peak_mb"]) for r in scans)
    print(f"scanner peak RSS: {peak:.0f} MB (target <= 250 MB: {'met' if peak <= 250 else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
