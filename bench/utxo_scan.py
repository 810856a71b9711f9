"""Benchmark the UTXO scanner on a regtest litecoind against a raw batched fetch, in one run.

    PYTHONPATH=src:. python bench/utxo_scan.py [--blocks 2000] [--watched 10000] [--txs 3]

Set-up: a fresh regtest litecoind (tests/support/ltc_node.py); ``--watched`` watched addresses
(invoices inserted in bulk into a SQLite file, addresses derived from the test vpub); ``--blocks``
blocks of ``--txs`` transactions each (two outputs per transaction; about 1% of them pay a
watched address). The transactions are signed with a known key (``signrawtransactionwithkey``),
not by the node's wallet, which would take most of a second per block. Then, over the same blocks:

  paywatch   the real Scanner (UtxoAdapter + matching + ledger + SQLite), in a child process so
             that its peak RSS is its own;
  adapter    the production UtxoAdapter alone over the same blocks (no database);
  raw        the same JSON-RPC batches (``getblockhash`` per 100 blocks, ``getblock`` verbosity 2
             per 25) over one requests session, JSON decoded with Decimal, nothing else (the limit;
             target: paywatch >= 0.7 of it).
Also: HTTP round trips per scanned block (target <= 0.1) and the scanner's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.seed import add_store, insert_invoices, watched_invoice  # noqa: E402
from tests.support.ltc_node import VPUB, LtcNode  # noqa: E402

from paywatch.chains import utxo_addresses  # noqa: E402
from paywatch.chains.utxo import UtxoAdapter  # noqa: E402
from paywatch.chains.utxo_rpc import loads  # noqa: E402
from paywatch.config import NetworkConfig  # noqa: E402
from paywatch.ledger import Ledger  # noqa: E402
from paywatch.scanner import Scanner  # noqa: E402
from paywatch.store.db import make_engine, session_scope, upgrade  # noqa: E402
from paywatch.store.models import Payment  # noqa: E402

CHUNK = 100
BODIES = 25
FEE = Decimal("0.0001")
COIN_VALUE = Decimal("0.02")


def network_config(node: LtcNode, start: int) -> NetworkConfig:
    return NetworkConfig.model_validate(
        {
            "name": "bench",
            "family": "utxo",
            "chain": "litecoin",
            "net": "regtest",
            "rpc_urls": [node.url],
            "rpc_cookie_file": str(node.cookie_file),
            "confirmations": 6,
            "start_block": start,
            "batch_blocks": CHUNK,
            "body_batch": BODIES,
            "mempool": False,
            "requests_per_second": 10_000,  # a local node
            "xpub": VPUB,
            "assets": {"LTC": {"native": True, "decimals": 8}},
        }
    )


class Rpc:
    """Plain JSON-RPC batches over one requests session, with the node's cookie."""

    def __init__(self, node: LtcNode, wallet: str | None = None) -> None:
        self.url = node.url + (f"/wallet/{wallet}" if wallet else "")
        user, _, password = node.cookie_file.read_text().strip().partition(":")
        self.http = requests.Session()
        self.http.auth = (user, password)

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = [{"jsonrpc": "1.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        answers = sorted(loads(self.http.post(self.url, data=json.dumps(payload, default=str)).content), key=_id)
        for answer in answers:
            if answer.get("error"):
                raise RuntimeError(str(answer["error"]))
        return [a["result"] for a in answers]


def _id(answer: dict[str, Any]) -> int:
    return int(answer["id"])


def write_invoices(db_url: str, count: int) -> list[str]:
    upgrade(db_url)
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    addresses = [utxo_addresses.derive_address(VPUB, "litecoin", "regtest", "p2wpkh", i) for i in range(1, count + 1)]
    add_store(engine, now)
    rows = [
        watched_invoice(
            "inv_" + secrets.token_hex(10),
            address,
            asset="LTC",
            asset_key="native",
            decimals=8,
            amount=10**16,
            confirmations=6,
            now=now,
            address_index=i + 1,
        )
        for i, address in enumerate(addresses)
    ]
    insert_invoices(engine, rows)
    engine.dispose()
    return addresses


def mine_blocks(node: LtcNode, blocks: int, txs: int, watched: list[str]) -> tuple[int, int, int]:
    """``blocks`` blocks of ``txs`` transactions each; (first, last, outputs paying watched addresses)."""
    node.setup_wallet(110)  # 10 mature coinbases of 50 LTC
    rpc, wallet = Rpc(node), Rpc(node, "w")
    [spender] = wallet.batch([("getnewaddress", ["", "bech32"])])
    [key, info] = wallet.batch([("dumpprivkey", [spender]), ("getaddressinfo", [spender])])
    script = info["scriptPubKey"]
    coins: list[tuple[str, int]] = []
    needed = blocks * txs
    while len(coins) < needed:  # fan-out: coins of one known key, at most 400 per wallet transaction
        n = min(400, needed - len(coins))
        txid = _fan_out(wallet, spender, n)
        coins.extend((txid, vout) for vout in range(n))
    node.mine(1)
    sink = node.w("getnewaddress")
    first = node.height + 1
    hits = 0
    seq = 0
    for _ in range(blocks):
        raws = []
        for _ in range(txs):
            txid, vout = coins.pop()
            seq += 1
            to_watched = seq % 100 == 0
            hits += to_watched
            target = watched[seq % len(watched)] if to_watched else sink
            outputs = [{target: "0.005"}, {spender: str(COIN_VALUE - Decimal("0.005") - FEE)}]
            raws.append(("createrawtransaction", [[{"txid": txid, "vout": vout}], outputs]))
        created = rpc.batch(raws)
        prev = [[{**c[1][0][0], "scriptPubKey": script, "amount": str(COIN_VALUE)}] for c in raws]
        signed = rpc.batch([("signrawtransactionwithkey", [h, [key], p]) for h, p in zip(created, prev, strict=True)])
        rpc.batch([("sendrawtransaction", [s["hex"]]) for s in signed] + [("generatetoaddress", [1, sink])])
    return first, node.height, hits


def _fan_out(wallet: Rpc, address: str, n: int) -> str:
    """One wallet transaction with ``n`` outputs of 0.02 to ``address`` (duplicates through raw hex)."""
    placeholder = wallet.batch([("getnewaddress", ["", "bech32"])] * n)
    raw = wallet.batch([("createrawtransaction", [[], [{a: str(COIN_VALUE)} for a in placeholder]])])[0]
    infos = wallet.batch([("getaddressinfo", [a]) for a in [address, *placeholder]])
    ours = infos[0]["scriptPubKey"]
    for info in infos[1:]:
        raw = raw.replace(info["scriptPubKey"], ours)
    funded = wallet.batch([("fundrawtransaction", [raw, {"changePosition": n}])])[0]["hex"]
    signed = wallet.batch([("signrawtransactionwithwallet", [funded])])[0]["hex"]
    return str(wallet.batch([("sendrawtransaction", [signed])])[0])


def raw_fetch(node: LtcNode, first: int, last: int) -> tuple[float, int]:
    """The same batches as the scanner, decoded, nothing else."""
    rpc = Rpc(node)
    trips = 0
    started = time.perf_counter()
    for lo in range(first, last + 1, CHUNK):
        hi = min(last, lo + CHUNK - 1)
        hashes = rpc.batch([("getblockhash", [n]) for n in range(lo, hi + 1)])
        trips += 1
        for sub in range(0, len(hashes), BODIES):
            rpc.batch([("getblock", [h, 2]) for h in hashes[sub : sub + BODIES]])
            trips += 1
    return time.perf_counter() - started, trips


def adapter_fetch(node: LtcNode, first: int, last: int, watched: list[str]) -> float:
    """The production adapter alone (fetch, parse, exact amounts, matching predicate), no database."""
    adapter = UtxoAdapter(network_config(node, first))
    is_watched = set(watched).__contains__
    started = time.perf_counter()
    for lo in range(first, last + 1, CHUNK):
        adapter.fetch_range(lo, min(last, lo + CHUNK - 1), is_watched)
    return time.perf_counter() - started


def scan_child(url: str, cookie: str, first: int, db_url: str) -> None:
    """Run in a child process: scan to the tip with the real Scanner; print JSON figures."""
    node = LtcNode.__new__(LtcNode)
    node.port = int(url.rsplit(":", 1)[1])
    node.datadir = Path(cookie).parent.parent
    network = network_config(node, first)
    engine = make_engine(db_url)
    adapter = UtxoAdapter(network)
    scanner = Scanner(network, adapter, engine, Ledger({network.name: network}), lambda: datetime.now(UTC))
    started = time.perf_counter()
    results = scanner.run_until_caught_up()
    seconds = time.perf_counter() - started
    scanner.close()
    with session_scope(engine) as s:
        payments = len(s.exec(Payment.__table__.select()).all())  # type: ignore[attr-defined]
    blocks = sum(r.blocks for r in results)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"seconds": seconds, "blocks": blocks, "trips": adapter.rpc.round_trips, "payments": payments}
    print(json.dumps({**figures, "steps": len(results), "peak_mb": peak_mb}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--watched", type=int, default=10_000)
    parser.add_argument("--txs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scan-child", nargs=4, metavar=("URL", "COOKIE", "FIRST", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scan_child:
        url, cookie, first, db = args.scan_child
        scan_child(url, cookie, int(first), db)
        return 0

    node = LtcNode().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            started = time.perf_counter()
            watched = write_invoices(db_url, args.watched)
            first, last, hits = mine_blocks(node, args.blocks, args.txs, watched)
            blocks = last - first + 1
            print(
                f"set-up: {blocks} blocks x {args.txs} txs (+ coinbase), {args.watched:,} watched addresses, "
                f"{hits} outputs to them ({time.perf_counter() - started:.1f} s)"
            )
            pristine = Path(tmp) / "bench.db"
            ours_runs: list[dict[str, Any]] = []
            raw_runs: list[float] = []
            adapter_runs: list[float] = []
            raw_trips = 0
            for round_no in range(args.rounds):  # interleaved rounds; best of each (the cores are shared)
                scan_db = Path(tmp) / f"scan{round_no}.db"
                shutil.copyfile(pristine, scan_db)
                cmd = [sys.executable, __file__, "--scan-child", node.url, str(node.cookie_file), str(first)]
                child = subprocess.run([*cmd, f"sqlite:///{scan_db}"], capture_output=True, text=True, check=True)
                ours_runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
                raw_s, raw_trips = raw_fetch(node, first, last)
                raw_runs.append(raw_s)
                adapter_runs.append(adapter_fetch(node, first, last, watched))
            ours = min(ours_runs, key=lambda r: float(r["seconds"]))
            raw_s = min(raw_runs)
            adapter_s = min(adapter_runs)
            print(
                "rounds: paywatch "
                + ", ".join(f"{r['blocks'] / r['seconds']:.0f}" for r in ours_runs)
                + " | raw "
                + ", ".join(f"{blocks / t:.0f}" for t in raw_runs)
                + " blocks/s (best of each is compared below)"
            )
    finally:
        node.close()

    ours_bps = ours["blocks"] / ours["seconds"]
    raw_bps = blocks / raw_s
    ratio = ours_bps / raw_bps
    trips = ours["trips"] / ours["blocks"]
    print(
        f"paywatch scanner:       {ours_bps:8.0f} blocks/s  ({ours['blocks']} blocks in {ours['seconds']:.2f} s, "
        f"{ours['steps']} steps, {ours['payments']} payments stored of {hits})"
    )
    print(
        f"raw batched getblock 2: {raw_bps:8.0f} blocks/s  -> paywatch/raw = {ratio:.2f} "
        f"(target >= 0.7: {'met' if ratio >= 0.7 else 'MISSED'})"
    )
    print(
        f"UtxoAdapter alone:      {blocks / adapter_s:8.0f} blocks/s  -> adapter/raw = {raw_s / adapter_s:.2f} "
        "(the rest of the scanner's time is the chain-neutral ledger and database work)"
    )
    print(
        f"HTTP round trips per scanned block: paywatch {trips:.3f} (raw baseline {raw_trips / blocks:.3f}; "
        f"target <= 0.1: {'met' if trips <= 0.1 else 'MISSED'})"
    )
    print(f"scanner peak RSS: {ours['peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
