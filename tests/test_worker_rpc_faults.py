"""RPC faults: the worker scans through a proxy that fails 30% of the node's calls.

The faults are HTTP 500/502/503, JSON-RPC error objects (whole answers or one item of a batch),
connection resets and answers slower than the client's timeout (see ``tests/support/fault_proxy.py``).
While they last, anvil keeps mining blocks that pay 60 invoices. Then the faults stop while the
chain keeps growing, and the lag (anvil's tip minus the stored cursor) must come back to ~0
within a bound; the time it took is printed.

Nothing may be skipped: every payment is credited once, the stored block hashes of the whole
scanned range equal anvil's canonical hashes (read from anvil directly, not through the proxy)
and form one unbroken chain up to the cursor.

The worker runs in-process (the production ``Worker``, its scheduler and error handling) with the
EVM adapter built with a short client timeout so that slow answers count as timeouts.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.chains.evm import LOG_SPAN_REGROW, EvmAdapter
from paywatch.chains.evm_rpc import Web3Provider
from paywatch.config import AppConfig, Settings, parse_networks, raw_document
from paywatch.devnet.chain import Chain
from paywatch.devnet.node import ANVIL_IN_NODE_MODULES, AnvilNode
from paywatch.metrics import REGISTRY
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, NetworkState, Payment, ScannedBlock
from paywatch.worker import Worker
from tests.conftest import EVM_XPUB
from tests.support.fault_proxy import KINDS, FaultProxy
from tests.support.ports import free_port
from tests.support.worker_procs import HANG_GUARD, wait_for
from tests.test_worker_crash import InvoiceSpec, seed, token_call

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NETWORK = "anvil"
USDT = 10**6
FINNEY = 10**15
INVOICES = 60
FAULT_RATE = 0.3
BACKLOG_BLOCKS = 300  # mined before the worker starts: it catches up under faults
LIVE_BLOCKS = 150  # mined while the worker runs and the faults last
MIN_FAULTY_CALLS = 150  # the faults last at least this many calls
CLIENT_TIMEOUT = 0.5
SLOW_DELAY = 1.0  # a "slow" answer comes after the client gave up
CONFIRMATIONS = 2
RECOVERY_GUARD = HANG_GUARD  # the lag must come back; how fast is reported, not judged (a loaded box is slow)
SEED = 20261122


class WorkerThread:
    """The production worker on its own event loop in a background thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self.worker.run(install_signals=False)

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._started.set()

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.stop)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


def specs() -> list[InvoiceSpec]:
    kinds = [("USDT", (100,)), ("ETH", (100,)), ("USDT", (40, 60)), ("ETH", (120,)), ("USDT", (50,))]
    out = []
    for i in range(INVOICES):
        asset, parts = kinds[i % len(kinds)]
        amount = (5 + i) * USDT if asset == "USDT" else (i + 1) * FINNEY
        out.append(InvoiceSpec(f"order-{i:03d}", asset, amount, parts))
    return out


def network_yaml(rpc_url: str, token: str, start_block: int) -> str:
    body = {
        "family": "evm",
        "chain_id": 31337,
        "rpc_urls": [rpc_url],
        "confirmations": CONFIRMATIONS,
        "poll_interval": 0.2,
        "batch_blocks": 4,
        "requests_per_second": 1000,  # a local node; the throttle is not what this test measures
        "start_block": start_block,
        "xpub": EVM_XPUB,
        "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": token, "decimals": 6}},
    }
    return raw_document({"networks": {NETWORK: body}})


def scan_errors() -> float:
    return REGISTRY.get_sample_value("paywatch_scan_errors_total", {"network": NETWORK}) or 0.0


def cursor_of(engine: Engine) -> int | None:
    with session_scope(engine) as session:
        state = session.get(NetworkState, NETWORK)
        return state.cursor_height if state else None


def lag(chain: Chain, engine: Engine, start_block: int) -> int:
    cursor = cursor_of(engine)
    return chain.height() - (start_block - 1 if cursor is None else cursor)


@pytest.fixture
def anvil() -> Iterator[AnvilNode]:
    if not (ROOT / ANVIL_IN_NODE_MODULES).exists():
        pytest.skip("anvil is not installed (npm install @foundry-rs/anvil)")
    node = AnvilNode(port=free_port()).start()
    try:
        yield node
    finally:
        node.close()


def test_thirty_percent_rpc_faults_skip_nothing_and_the_lag_recovers(
    anvil: AnvilNode, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    chain = Chain(anvil)
    token = chain.deploy("TestToken", "Tether USD (test)", "USDT", 6, 10**9 * USDT)
    chain.wait(chain.token_transfer(token, chain.payer, 10**8 * USDT, sender=chain.accounts[0]))
    start_block = chain.height() + 1
    with FaultProxy(anvil.url, rate=FAULT_RATE, seed=SEED, slow_delay=SLOW_DELAY) as proxy:
        networks = parse_networks(network_yaml(proxy.url, token, start_block), source="faults.yaml", env={})
        settings = Settings(database_url=db_url, networks=tmp_path / "faults.yaml", allow_private_callbacks=True)
        config = AppConfig(settings=settings, networks=networks)
        invoice_specs = specs()
        _secret, addresses = seed(engine, config, None, invoice_specs)

        # payments: block offset -> (to, asset, amount, order id)
        schedule: dict[int, list[tuple[str, str, int, str]]] = {}
        for spec in invoice_specs:
            offsets = sorted(rng.sample(range(BACKLOG_BLOCKS + LIVE_BLOCKS), len(spec.parts)))
            for offset, percent in zip(offsets, spec.parts, strict=True):
                item = (addresses[spec.order_id], spec.asset, spec.amount * percent // 100, spec.order_id)
                schedule.setdefault(offset, []).append(item)
        sent: dict[str, tuple[str, int]] = {}

        adapter = EvmAdapter(networks[NETWORK], timeout=CLIENT_TIMEOUT, attempts=3)
        worker = Worker(config, engine, adapters={NETWORK: adapter}, sweep_seconds=1.0, dispatch_seconds=1.0)
        errors_before = scan_errors()
        chain.automine(False)
        try:

            def mine_block(offset: int) -> None:
                for to, asset, amount, order_id in schedule.get(offset, []):
                    if asset == "ETH":
                        tx = {"from": chain.payer, "to": to, "value": hex(amount), "gas": hex(21_000)}
                    else:
                        tx = {"from": chain.payer, "to": token, "data": token_call(to, amount), "gas": hex(100_000)}
                    sent[str(anvil.rpc("eth_sendTransaction", tx)).lower()] = (order_id, amount)
                chain.mine(1)

            for offset in range(BACKLOG_BLOCKS):
                mine_block(offset)
            with WorkerThread(worker):
                # 1. 30% of the calls fail while the worker catches up and the chain keeps paying
                began = time.monotonic()
                for offset in range(BACKLOG_BLOCKS, BACKLOG_BLOCKS + LIVE_BLOCKS):
                    mine_block(offset)
                    time.sleep(0.04)
                while proxy.calls < MIN_FAULTY_CALLS and time.monotonic() - began < HANG_GUARD:
                    chain.mine(1)  # the chain stays live until the worker made enough calls
                    time.sleep(0.1)
                faulty = time.monotonic() - began
                during = proxy.figures()
                errors_during = scan_errors() - errors_before
                lag_at_end = lag(chain, engine, start_block)

                # 2. the faults stop; the chain keeps growing; the lag must come back to ~0
                proxy.rate = 0.0
                stopped = time.monotonic()
                recovered_at: float | None = None
                while time.monotonic() - stopped < RECOVERY_GUARD:
                    chain.mine(1)
                    if lag(chain, engine, start_block) <= 1:
                        recovered_at = time.monotonic()
                        break
                    time.sleep(0.25)
                assert recovered_at is not None, f"lag still {lag(chain, engine, start_block)} after {RECOVERY_GUARD} s"
                recovery = recovered_at - stopped

                # 3. confirm everything, let the worker reach the tip
                chain.mine(CONFIRMATIONS)
                tip = chain.height()
                wait_for(
                    "the cursor at the tip, every payment confirmed",
                    lambda: cursor_of(engine) == tip and all_confirmed(engine),
                    timeout=15,
                    every=0.05,
                )
        finally:
            chain.automine(True)

        print(
            f"\nRPC faults ({db_url.split(':')[0]}): backlog of {BACKLOG_BLOCKS} blocks, {LIVE_BLOCKS} more mined "
            f"{faulty:.1f} s of faults; "
            f"proxy calls {during['calls']}, faults {during['faults']} ({during['share']:.0%}) {during['by_kind']}; "
            f"failed scan steps {errors_during:.0f}; lag when the faults stopped {lag_at_end} blocks; "
            f"recovered to lag <= 1 in {recovery:.2f} s; eth_getLogs span afterwards {adapter.log_span}"
        )
        assert during["calls"] >= MIN_FAULTY_CALLS
        assert 0.25 <= during["share"] <= 0.35
        assert set(during["by_kind"]) == set(KINDS)  # every kind of fault happened
        # lag_at_end is reported, not judged: how far the faults held the worker back depends on the machine's speed
        assert adapter.log_span >= 4  # eth_getLogs spans cut by timeouts grew back (>= batch_blocks)

    check_nothing_skipped(anvil, engine, start_block, tip, sent, invoice_specs)


def all_confirmed(engine: Engine) -> bool:
    with session_scope(engine) as session:
        stmt = (
            select(func.count()).select_from(Invoice).where(col(Invoice.amount_paid) != col(Invoice.amount_confirmed))
        )
        return int(session.exec(stmt).one()) == 0


def check_nothing_skipped(
    anvil: AnvilNode,
    engine: Engine,
    start_block: int,
    tip: int,
    sent: dict[str, tuple[str, int]],
    invoice_specs: list[InvoiceSpec],
) -> None:
    assert cursor_of(engine) == tip
    with session_scope(engine) as session:
        blocks = {
            b.number: (b.hash, b.parent_hash)
            for b in session.exec(select(ScannedBlock).where(ScannedBlock.network == NETWORK))
        }
        invoices = {inv.id: inv for inv in session.exec(select(Invoice))}
        payments = list(session.exec(select(Payment)))
        state = session.get(NetworkState, NETWORK)
        assert state is not None
        cursor_hash = state.cursor_hash
    # the cursor never passed an unread block: every block of the range is stored, with the
    # canonical hash, each extending the one before
    assert sorted(blocks) == list(range(start_block, tip + 1))
    for number, (block_hash, parent_hash) in blocks.items():
        canonical = anvil.rpc("eth_getBlockByNumber", hex(number), False)
        assert (block_hash, parent_hash) == (canonical["hash"].lower(), canonical["parentHash"].lower()), number
        if number > start_block:
            assert parent_hash == blocks[number - 1][0]
    assert cursor_hash == blocks[tip][0]
    # every payment credited, once, to its invoice
    assert len({(p.tx_hash, p.log_index) for p in payments}) == len(payments)
    credited = {p.tx_hash: (invoices[p.invoice_id].order_id, p.amount) for p in payments}
    assert credited == sent
    for p in payments:
        assert p.block_hash == blocks[p.block_number][0] and not p.orphaned
    by_order = {inv.order_id: inv for inv in invoices.values()}
    for spec in invoice_specs:
        invoice = by_order[spec.order_id]
        paid = sum(amount for order_id, amount in sent.values() if order_id == spec.order_id)
        assert (invoice.amount_paid, invoice.amount_confirmed) == (paid, paid), spec
        assert invoice.status == ("COMPLETED" if paid >= spec.amount else "PARTIAL"), spec
    print(f"checked: blocks {start_block}..{tip} stored with canonical hashes; {len(payments)} payments credited once")


class FlakyLogs:
    """A real provider whose ``eth_getLogs`` times out while ``timeouts`` lasts, and refuses ranges
    wider than ``limit`` blocks the way Infura does."""

    def __init__(self, url: str) -> None:
        self._inner = Web3Provider(url, timeout=5)
        self.timeouts = 0
        self.limit: int | None = None

    def make_request(self, method: str, params: Any) -> Any:
        if method == "eth_getLogs":
            span = int(params[0]["toBlock"], 16) - int(params[0]["fromBlock"], 16) + 1
            if self.timeouts > 0:
                self.timeouts -= 1
                raise requests.Timeout("read timed out (scripted)")
            if self.limit is not None and span > self.limit:
                error = {"code": -32005, "message": "query returned more than 10000 results"}
                return {"jsonrpc": "2.0", "id": 1, "error": error}
        return self._inner.make_request(method, params)

    def make_batch_request(self, calls: Sequence[tuple[str, Any]]) -> Any:
        return self._inner.make_batch_request(calls)


def test_log_span_cut_by_timeouts_grows_back_but_a_stated_limit_stays(anvil: AnvilNode) -> None:
    chain = Chain(anvil)
    token = chain.deploy("TestToken", "Tether USD (test)", "USDT", 6, 10**9 * USDT)
    chain.mine(200)
    network = parse_networks(network_yaml(anvil.url, token, 1), source="faults.yaml", env={})[NETWORK]
    network = network.model_copy(update={"max_block_range": 64})
    providers: list[FlakyLogs] = []

    def factory(url: str) -> FlakyLogs:
        providers.append(FlakyLogs(url))
        return providers[-1]

    adapter = EvmAdapter(network, provider_factory=factory, sleep=lambda _s: None)
    provider = providers[0]

    def scan(start: int, end: int) -> None:
        assert [b.number for b in adapter.fetch_range(start, end, lambda _a: True).blocks] == list(
            range(start, end + 1)
        )

    provider.timeouts = 2  # a passing fault: 64 -> 32 -> 16
    scan(1, 64)
    assert adapter.log_span == 16
    for _ in range(LOG_SPAN_REGROW):
        scan(65, 80)
    assert adapter.log_span == 32
    for _ in range(LOG_SPAN_REGROW):
        scan(65, 96)
    assert adapter.log_span == 64  # back to max_block_range, never beyond

    provider.limit = 10  # a stated limit: remembered for good
    scan(1, 64)
    assert adapter.log_span <= 10
    stated = adapter.log_span
    for _ in range(3 * LOG_SPAN_REGROW):
        scan(1, 10)
    assert adapter.log_span == stated
    provider.timeouts = 1  # a timeout under a stated limit, then successes: back to the limit only
    scan(1, 10)
    for _ in range(2 * LOG_SPAN_REGROW):
        scan(1, 10)
    assert adapter.log_span == stated
