"""Benchmark the EVM scanner on anvil against a raw fetch and a per-block web3 loop, in one run.

    PYTHONPATH=src:. python bench/evm_scan.py [--blocks 2000] [--watched 10000]

Set-up: a fresh anvil; ``--blocks`` blocks of 5 transactions (3 native, 2 ERC-20 transfers),
``--watched`` watched addresses (invoices inserted in bulk into a SQLite file), 1% of the
transfers going to them. Then, over the same blocks:

  paywatch   the real Scanner (EvmAdapter + matching + ledger + SQLite), in a child process so that
             its peak RSS is its own;
  (a) raw    batched JSON-RPC over httpx: block bodies + eth_getLogs per 100 blocks, JSON decoded,
             nothing else (the limit; target: paywatch >= 0.7 of it);
  (a') bytes  the same batches over httpx, the body read as bytes and never decoded: the node and
             HTTP's own limit (set ``PAYWATCH_BENCH_PROFILE=file`` to write the scanner's cProfile);
  (b) web3   a per-block loop: ``w3.eth.get_block(n, True)`` and every receipt through web3, the way
             existing processors scan (target: paywatch >= 3x faster);
  (c) web3 batch  the same batches as paywatch, but through web3's formatting layer
             (``w3.batch_requests()``), to show what skipping it saves.
Also: HTTP round trips per scanned block and the scanner's peak RSS (target <= 250 MB).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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
    node: AnvilNode, token: str, blocks: int, watched: list[str], rng: random.Random, hit_rate: float = 0.01
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
    started = time.perf_counter()
    results = scanner.run_until_caught_up()
    seconds = time.perf_counter() - started
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
                "blocks": blocks,
                "trips": adapter.rpc.round_trips,
                "payments": payments,
                "steps": len(results),
                "peak_mb": peak_mb,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--watched", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scan-child", nargs=4, metavar=("URL", "TOKEN", "FIRST", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scan_child:
        url, token, first, db = args.scan_child
        scan_child(url, token, int(first), db)
        return 0

    node = AnvilNode("--gas-limit", "300000000").start()
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
            ours_runs: list[dict[str, Any]] = []
            raw_runs: list[float] = []
            bytes_runs: list[float] = []
            batched_runs: list[float] = []
            for round_no in range(args.rounds):  # interleaved rounds; best of each (the cores are shared)
                scan_db = Path(tmp) / f"scan{round_no}.db"
                shutil.copyfile(pristine, scan_db)
                child = subprocess.run(
                    [sys.executable, __file__, "--scan-child", node.url, token, str(first), f"sqlite:///{scan_db}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                ours_runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
                raw_s, raw_trips = raw_fetch(node.url, token, first, last)
                raw_runs.append(raw_s)
                bytes_runs.append(bytes_fetch(node.url, token, first, last))
                batched_runs.append(web3_batched(node.url, token, first, last))
            per_block_s = web3_per_block(node.url, first, last)
            ours = min(ours_runs, key=lambda r: float(r["seconds"]))
            raw_s, batched_s, bytes_s = min(raw_runs), min(batched_runs), min(bytes_runs)
            print(
                "rounds: paywatch "
                + ", ".join(f"{r['blocks'] / r['seconds']:.0f}" for r in ours_runs)
                + " | raw "
                + ", ".join(f"{blocks / t:.0f}" for t in raw_runs)
                + " | bytes "
                + ", ".join(f"{blocks / t:.0f}" for t in bytes_runs)
                + " | web3 batches "
                + ", ".join(f"{blocks / t:.0f}" for t in batched_runs)
                + " blocks/s (best of each is compared below)"
            )
    finally:
        node.close()

    ours_bps = ours["blocks"] / ours["seconds"]
    raw_bps = blocks / raw_s
    per_block_bps = blocks / per_block_s
    batched_bps = blocks / batched_s
    print(
        f"paywatch scanner:        {ours_bps:8.0f} blocks/s  ({ours['blocks']} blocks in {ours['seconds']:.2f} s, "
        f"{ours['steps']} steps, {ours['payments']} payments stored)"
    )
    print(
        f"(a) raw httpx batches:   {raw_bps:8.0f} blocks/s  -> paywatch/raw = {ours_bps / raw_bps:.2f} "
        f"(target >= 0.7: {'met' if ours_bps / raw_bps >= 0.7 else 'MISSED'})"
    )
    bytes_bps = blocks / bytes_s
    print(
        f"(a') bytes only, no JSON decode: {bytes_bps:8.0f} blocks/s  -> paywatch/bytes = {ours_bps / bytes_bps:.2f}, "
        f"raw/bytes = {raw_bps / bytes_bps:.2f}"
    )
    print(
        f"(b) web3 per-block loop: {per_block_bps:8.0f} blocks/s  -> paywatch is {ours_bps / per_block_bps:.1f}x "
        f"faster (target >= 3x: {'met' if ours_bps / per_block_bps >= 3 else 'MISSED'})"
    )
    print(
        f"(c) web3 batches with formatting: {batched_bps:8.0f} blocks/s  -> the same fetch unformatted (a) is "
        f"{raw_bps / batched_bps:.2f}x faster; the whole paywatch scanner is {ours_bps / batched_bps:.2f}x faster"
    )
    print(
        f"HTTP round trips per scanned block: paywatch {ours['trips'] / ours['blocks']:.3f} "
        f"(raw baseline {raw_trips / blocks:.3f}; per-block loop 6.000)"
    )
    print(
        f"scanner peak RSS: {ours['peak_mb']:.0f} MB (target <= 250 MB: "
        f"{'met' if ours['peak_mb'] <= 250 else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
