"""Crash suite: ``kill -9`` the worker process at 20 random points of a 200-block scan.

A chain of 200 blocks is built on anvil beforehand, paying 200 invoices (exact, partial then
topped up, paid in three parts, overpaid, partial only; native ETH and a test token) among noise
(transfers to unwatched addresses, zero-value and reverted token transfers). The same store and
invoices (same HD addresses, same order ids) are created in two databases before any payment.

* Reference: one worker process scans the whole range into the first database, uninterrupted.
* Crash run: a worker process on the second database is SIGKILLed 20 times at seeded random
  points (a random number of blocks into its scan, plus a random few milliseconds), and restarted
  after each kill; the last one runs to the end.

Then the crash database must equal the reference (payments, invoice statuses and amounts, the
sequence of statuses and reasons per invoice, the callback events per invoice, scanned blocks,
the cursor), there are no duplicate payment rows, both match the payments actually made, and
every callback event reached the real receiver at least once under its one ``webhook-id`` with a
valid signature. Timestamps and generated ids differ between runs and are left out.

Set ``PAYWATCH_CRASH_SEED`` to replay a run; the seed is printed.

The child process runs :func:`child` (what this module run as a script runs): the production
``Worker`` and config loading, with one injected change, a dispatcher whose claim lease is 25 s
instead of ~8 min, so that the restarted workers themselves redeliver what a kill left claimed
within the test's time. Each child is forked from a server that has already imported paywatch
(``tests/support/forked.py``), so the 21 starts per database do not each pay the interpreter's
start-up; it is still a process of its own, really SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig, Settings, load_config, raw_document
from paywatch.devnet.chain import Chain
from paywatch.devnet.node import ANVIL_IN_NODE_MODULES, AnvilNode
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import (
    CallbackEvent,
    Invoice,
    NetworkState,
    Payment,
    ScannedBlock,
    StatusHistory,
    UnmatchedTransfer,
)
from paywatch.stores import create_store
from tests.conftest import EVM_XPUB, database_params, fresh_postgres_database
from tests.support.callback_receiver import Receiver, Reply, verify
from tests.support.databases import fresh_sqlite_database
from tests.support.fault_proxy import FaultProxy
from tests.support.forked import ForkedProcess
from tests.support.ports import free_port
from tests.support.worker_procs import HANG_GUARD

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NETWORK = "anvil"
BLOCKS = 200  # ~2 transactions a block: every step has payments to record when a kill lands
INVOICES = 200
KILLS = 20
BATCH_BLOCKS = 5
CONFIRMATIONS = 3
USDT = 10**6
FINNEY = 10**15
#: Kinds of invoice, cycled over the 200: (asset, parts of the amount paid, in percent).
KINDS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("ETH", (100,)),  # exact, native
    ("USDT", (100,)),  # exact, token
    ("USDT", (40, 60)),  # partial, then topped up
    ("ETH", (40, 60)),
    ("USDT", (120,)),  # overpaid
    ("ETH", (150,)),
    ("USDT", (50,)),  # partial only
    ("USDT", (30, 30, 40)),  # three parts
)
#: Round trip added to every RPC call (a remote node); it makes one scan step last about
#: STEP_SECONDS, so that kills land inside steps rather than between them.
RPC_LATENCY = 0.015
STEP_SECONDS = 0.08
#: Blocks the kills leave for the last, uninterrupted worker.
FINAL_RESERVE = 24
#: A delivery to the local receiver (5 ms) that takes longer than this on a loaded machine would be
#: retried only after the production schedule's delays (5 s, then 5 min): keep it far from any real
#: round trip. The claim lease must outlast it (the dispatcher enforces timeout + 5 s).
CHILD_DISPATCH_TIMEOUT = 20.0
CHILD_CLAIM_LEASE = timedelta(seconds=25)


# --------------------------------------------------------------------------- the child process


def child() -> None:
    """``paywatch worker`` with a short callback claim lease (see the module docstring)."""
    from paywatch.api.context import utc_now
    from paywatch.callbacks.dispatcher import Dispatcher
    from paywatch.logs import configure
    from paywatch.runtime import open_database
    from paywatch.worker import Worker

    config = load_config()
    configure(json_lines=False)
    engine = open_database(config)
    dispatcher = Dispatcher(engine, config.settings, utc_now, timeout=CHILD_DISPATCH_TIMEOUT, lease=CHILD_CLAIM_LEASE)
    worker = Worker(config, engine, dispatcher=dispatcher, sweep_seconds=1.0, dispatch_seconds=0.2)
    asyncio.run(worker.run())


# --------------------------------------------------------------------------- the chain


@dataclass
class Plan:
    """The chain that was built: what each invoice was paid, and where."""

    start_block: int
    tip: int
    token: str
    #: order id -> the successful, non-zero amounts sent to its address, in chain order
    paid: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: tx hash -> (order id, amount) of every successful payment to an invoice
    payments: dict[str, tuple[str, int]] = field(default_factory=dict)
    txs: int = 0


@dataclass(frozen=True)
class InvoiceSpec:
    order_id: str
    asset: str
    amount: int  # base units
    parts: tuple[int, ...]  # percent of the amount, one per payment


def invoice_specs() -> list[InvoiceSpec]:
    specs = []
    for i in range(INVOICES):
        asset, parts = KINDS[i % len(KINDS)]
        amount = (10 + i) * USDT if asset == "USDT" else (i + 1) * FINNEY
        specs.append(InvoiceSpec(f"order-{i:03d}", asset, amount, parts))
    return specs


def token_call(to: str, amount: int) -> str:
    """Calldata of ``transfer(to, amount)``."""
    return "0xa9059cbb" + to.lower().removeprefix("0x").rjust(64, "0") + format(amount, "064x")


def build_chain(
    chain: Chain, token: str, addresses: dict[str, str], specs: list[InvoiceSpec], rng: random.Random
) -> Plan:
    """Mine BLOCKS blocks after the current head with every payment of ``specs`` spread across them."""
    start = chain.height() + 1
    plan = Plan(start_block=start, tip=start + BLOCKS - 1, token=token)
    # offset -> list of (kind, to, amount, order id or None); kind: eth, token, token-zero, token-revert
    blocks: dict[int, list[tuple[str, str, int, str | None]]] = defaultdict(list)
    for spec in specs:
        offsets = sorted(rng.sample(range(BLOCKS), len(spec.parts)))
        kind = "eth" if spec.asset == "ETH" else "token"
        for offset, percent in zip(offsets, spec.parts, strict=True):
            blocks[offset].append((kind, addresses[spec.order_id], spec.amount * percent // 100, spec.order_id))
    for _ in range(30):  # noise: payments to addresses nobody watches
        to = "0x" + rng.randbytes(20).hex()
        blocks[rng.randrange(BLOCKS)].append((rng.choice(["eth", "token"]), to, rng.randint(1, 10**6), None))
    for spec in rng.sample(specs, 10):  # defences: zero-value and reverted token transfers
        blocks[rng.randrange(BLOCKS)].append(("token-zero", addresses[spec.order_id], 0, None))
        blocks[rng.randrange(BLOCKS)].append(("token-revert", addresses[spec.order_id], 5 * USDT, None))
    broke = chain.accounts[5]  # holds no tokens: its transfers revert
    expected_status: dict[str, int] = {}
    chain.automine(False)
    try:
        pending_empty = 0
        for offset in range(BLOCKS):
            if offset not in blocks:
                pending_empty += 1
                continue
            if pending_empty:
                chain.mine(pending_empty)
                pending_empty = 0
            for kind, to, amount, order_id in blocks[offset]:
                if kind == "eth":
                    tx = {"from": chain.payer, "to": to, "value": hex(amount), "gas": hex(21_000)}
                else:
                    sender = broke if kind == "token-revert" else chain.payer
                    tx = {"from": sender, "to": token, "data": token_call(to, amount), "gas": hex(100_000)}
                tx_hash = str(chain.node.rpc("eth_sendTransaction", tx)).lower()
                expected_status[tx_hash] = 0 if kind == "token-revert" else 1
                plan.txs += 1
                if order_id is not None:
                    plan.paid[order_id].append(amount)
                    plan.payments[tx_hash] = (order_id, amount)
            chain.mine(1)
        if pending_empty:
            chain.mine(pending_empty)
    finally:
        chain.automine(True)
    assert chain.height() == plan.tip
    for tx_hash, status in expected_status.items():
        assert chain.receipt_status(tx_hash) == status, tx_hash
    return plan


# --------------------------------------------------------------------------- databases


def write_networks(path: Path, rpc_url: str, token: str, start_block: int) -> Path:
    body = {
        "family": "evm",
        "chain_id": 31337,
        "rpc_urls": [rpc_url],
        "confirmations": CONFIRMATIONS,
        "poll_interval": 0.2,
        "batch_blocks": BATCH_BLOCKS,
        "max_block_range": 2000,
        "start_block": start_block,
        "xpub": EVM_XPUB,
        "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": token, "decimals": 6}},
    }
    path.write_text(raw_document({"networks": {NETWORK: body}}))
    return path


def seed(
    engine: Engine, config: AppConfig, callback_url: str | None, specs: list[InvoiceSpec]
) -> tuple[str, dict[str, str]]:
    """The store (its webhook secret) and the invoices (order id -> address)."""
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        store = create_store(session, "crash shop", now, callback_url=callback_url).store
        secret = store.webhook_secret
        addresses = {}
        for spec in specs:
            decimals = 6 if spec.asset == "USDT" else 18
            amount = f"{spec.amount // 10**decimals}.{spec.amount % 10**decimals:0{decimals}d}"
            request = InvoiceRequest(NETWORK, spec.asset, amount, expires_in=24 * 3600, order_id=spec.order_id)
            invoice = create_invoice(session, config, store, request, now)
            assert invoice.amount == spec.amount
            addresses[spec.order_id] = invoice.address
    return secret, addresses


@pytest.fixture(params=database_params())
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(reference, crash) database URLs, migrated and empty."""
    if request.param == "sqlite":
        yield fresh_sqlite_database(tmp_path / "reference.db"), fresh_sqlite_database(tmp_path / "crash.db")
        return
    first, second = fresh_postgres_database(), fresh_postgres_database()
    try:
        yield next(first), next(second)
    finally:
        for gen in (first, second):
            gen.close()


# --------------------------------------------------------------------------- worker processes


class WorkerProcess:
    """One child running :func:`child` on one database (forked from the preloaded server of
    ``tests/support/forked.py``: the same code ``python -m tests.test_worker_crash`` runs, without
    the interpreter's start-up); its output is appended to ``log``."""

    def __init__(self, db_url: str, networks: Path, log: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "PAYWATCH_DATABASE_URL": db_url,
            "PAYWATCH_NETWORKS": str(networks),
            "PAYWATCH_ALLOW_PRIVATE_CALLBACKS": "1",
        }
        self.db_url = db_url
        self.proc = ForkedProcess(child, env=env, log=log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def cursor_of(engine: Engine) -> int | None:
    with session_scope(engine) as session:
        state = session.get(NetworkState, NETWORK)
        return state.cursor_height if state else None


def pending_events(engine: Engine) -> int:
    with session_scope(engine) as session:
        stmt = select(func.count()).select_from(CallbackEvent).where(CallbackEvent.state == "pending")
        return int(session.exec(stmt).one())


def wait_for(
    what: str, condition: Callable[[], bool], worker: WorkerProcess, log: Path, timeout: float, every: float = 0.01
) -> None:
    """Poll until ``condition`` every ``every`` s; fail if the worker dies, or on a hang: ``HANG_GUARD``
    seconds (at least) in which the database did not move (cursor, undelivered callbacks). A loaded
    box scans the 200 blocks slowly, but it scans them: slow progress is never a failure."""
    timeout = max(timeout, HANG_GUARD)
    engine = make_engine(worker.db_url)
    try:
        seen = progress(engine)
        deadline = checked = time.monotonic()
        deadline += timeout
        while not condition():
            if not worker.alive():
                pytest.fail(f"the worker exited ({worker.proc.returncode}) waiting for {what}:\n{tail(log)}")
            if time.monotonic() - checked >= 1.0:  # progress is looked at once a second
                checked, now = time.monotonic(), progress(engine)
                if now != seen:
                    seen, deadline = now, checked + timeout
                elif checked > deadline:
                    pytest.fail(f"no progress for {timeout:.0f} s waiting for {what} (at {now}):\n{tail(log)}")
            time.sleep(every)
    finally:
        engine.dispose()


def progress(engine: Engine) -> tuple[int | None, int]:
    """What a working worker changes: the cursor and the callbacks not yet delivered."""
    with session_scope(engine) as session:
        state = session.get(NetworkState, NETWORK)
        stmt = select(func.count()).select_from(CallbackEvent).where(CallbackEvent.state != "delivered")
        return (state.cursor_height if state else None), int(session.exec(stmt).one())


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_to_the_end(engine: Engine, db_url: str, networks: Path, log_path: Path, tip: int) -> None:
    """Start a worker, wait until it scanned to ``tip`` and delivered every event, SIGTERM it."""
    worker = WorkerProcess(db_url, networks, log_path)
    try:
        wait_for(
            "the scan and every callback",
            lambda: cursor_of(engine) == tip and pending_events(engine) == 0,
            worker,
            log_path,
            timeout=90,
            every=0.1,  # the kills poll finely (they land at a block); the end needs no precision
        )
        assert worker.terminate() == 0, tail(log_path)
    finally:
        worker.ensure_dead()


# --------------------------------------------------------------------------- comparison


def snapshot(engine: Engine) -> dict[str, dict[Any, Any]]:
    """The database state that must not depend on crashes, keyed by stable names (order ids, tx hashes)."""
    with session_scope(engine) as session:
        invoices = list(session.exec(select(Invoice)))
        order = {inv.id: inv.order_id for inv in invoices}
        state: dict[str, dict[Any, Any]] = {
            "invoices": {
                inv.order_id: (
                    inv.address,
                    inv.asset,
                    inv.amount,
                    inv.status,
                    tuple(inv.flags),
                    inv.amount_paid,
                    inv.amount_confirmed,
                    inv.status_version,
                )
                for inv in invoices
            },
            "payments": {
                (p.tx_hash, p.log_index): (
                    order[p.invoice_id],
                    p.asset_key,
                    p.amount,
                    p.from_address,
                    p.to_address,
                    p.block_number,
                    p.block_hash,
                    p.block_time,
                    p.success,
                    p.orphaned,
                    p.late,
                )
                for p in session.exec(select(Payment))
            },
            "unmatched": {
                (u.tx_hash, u.log_index): (u.to_address, u.amount, u.block_hash, u.reason, u.orphaned)
                for u in session.exec(select(UnmatchedTransfer))
            },
            "blocks": {
                b.number: (b.hash, b.parent_hash)
                for b in session.exec(select(ScannedBlock).where(ScannedBlock.network == NETWORK))
            },
        }
        history: dict[Any, list[Any]] = defaultdict(list)
        for h in session.exec(select(StatusHistory).order_by(col(StatusHistory.id))):
            history[order[h.invoice_id]].append((h.status, tuple(h.flags), h.reason, h.status_version))
        events: dict[Any, list[Any]] = defaultdict(list)
        for e in session.exec(select(CallbackEvent).order_by(col(CallbackEvent.id))):
            events[order.get(e.invoice_id or "")].append((e.type, e.status_version))
        network = session.get(NetworkState, NETWORK)
        assert network is not None
        state["history"] = {k: tuple(v) for k, v in history.items()}
        state["events"] = {k: tuple(v) for k, v in events.items()}
        state["cursor"] = {"cursor": (network.cursor_height, network.cursor_hash, network.tip_height)}
    return state


def differences(reference: dict[str, dict[Any, Any]], crashed: dict[str, dict[Any, Any]]) -> dict[str, list[Any]]:
    """Per section, the keys whose values differ or that exist on one side only."""
    diffs: dict[str, list[Any]] = {}
    for section, ref_rows in reference.items():
        rows = crashed[section]
        keys = sorted(set(ref_rows) | set(rows), key=repr)
        diffs[section] = [(k, ref_rows.get(k), rows.get(k)) for k in keys if ref_rows.get(k) != rows.get(k)]
    return diffs


def duplicate_payments(engine: Engine) -> int:
    with session_scope(engine) as session:
        stmt = (
            select(Payment.network, Payment.tx_hash, Payment.log_index, func.count())
            .group_by(col(Payment.network), col(Payment.tx_hash), col(Payment.log_index))
            .having(func.count() > 1)
        )
        return len(session.exec(stmt).all())


def check_against_chain(state: dict[str, dict[Any, Any]], plan: Plan, specs: list[InvoiceSpec]) -> None:
    """Independently of the reference: the payments made are the payments stored, statuses follow."""
    stored = {tx: (row[0], row[2]) for (tx, _log), row in state["payments"].items()}
    assert stored == plan.payments
    for spec in specs:
        _addr, _asset, amount, status, flags, paid, confirmed, _version = state["invoices"][spec.order_id]
        assert paid == sum(plan.paid[spec.order_id]), spec
        if paid < amount:
            assert status == "PARTIAL", spec
        elif confirmed == paid:
            assert status == "COMPLETED", spec
            assert ("overpaid" in flags) == (paid > amount), spec
        else:  # paid in the last CONFIRMATIONS - 1 blocks
            assert status == "WAITING_FOR_CONFIRMATIONS", spec
    assert set(state["blocks"]) == set(range(plan.start_block, plan.tip + 1))
    assert state["cursor"]["cursor"][0] == plan.tip
    assert state["unmatched"] == {}


# --------------------------------------------------------------------------- the test


def test_kill_9_at_random_points_equals_an_uninterrupted_run(two_databases: tuple[str, str], tmp_path: Path) -> None:
    if not (ROOT / ANVIL_IN_NODE_MODULES).exists():
        pytest.skip("anvil is not installed (npm install @foundry-rs/anvil)")
    seed_value = int(os.environ.get("PAYWATCH_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\ncrash suite seed: {seed_value} (PAYWATCH_CRASH_SEED={seed_value} replays it)")
    rng = random.Random(seed_value)
    ref_url, crash_url = two_databases
    started = time.monotonic()
    node = AnvilNode(port=free_port()).start()
    engines: list[Engine] = []
    try:
        chain = Chain(node)
        token = chain.deploy("TestToken", "Tether USD (test)", "USDT", 6, 10**9 * USDT)
        chain.wait(chain.token_transfer(token, chain.payer, 10**8 * USDT, sender=chain.accounts[0]))
        specs = invoice_specs()
        proxy = FaultProxy(node.url, latency=RPC_LATENCY)
        networks = write_networks(tmp_path / "networks.yaml", proxy.url, token, chain.height() + 1)
        with proxy, Receiver(Reply(200, delay=0.005)) as receiver:
            secrets: dict[str, str] = {}
            address_books = []
            for label, url in (("ref", ref_url), ("crash", crash_url)):
                settings = Settings(database_url=url, networks=networks, allow_private_callbacks=True)
                config = load_config(settings)
                engines.append(make_engine(url))
                secrets[label], book = seed(engines[-1], config, receiver.url(f"/{label}"), specs)
                address_books.append(book)
            assert address_books[0] == address_books[1]  # same xpub, same derivation indexes
            plan = build_chain(chain, token, address_books[0], specs, rng)
            assert plan.start_block == config.networks[NETWORK].start_block
            built = time.monotonic()
            print(
                f"chain: blocks {plan.start_block}..{plan.tip}, {plan.txs} transactions, {len(plan.payments)} "
                f"payments to {INVOICES} invoices; built in {built - started:.1f} s"
            )

            ref_engine, crash_engine = engines
            run_to_the_end(ref_engine, ref_url, networks, tmp_path / "reference.log", plan.tip)
            reference_done = time.monotonic()
            print(f"reference run: {reference_done - built:.1f} s")

            kills = kill_repeatedly(crash_engine, crash_url, networks, tmp_path / "crash.log", plan, rng)
            run_to_the_end(crash_engine, crash_url, networks, tmp_path / "crash.log", plan.tip)
            crash_done = time.monotonic()
            print(
                f"crash run: {len(kills)} kills at cursor heights {[k - plan.start_block + 1 for k in kills]} "
                f"(blocks into the scan); {crash_done - reference_done:.1f} s"
            )

            reference, crashed = snapshot(ref_engine), snapshot(crash_engine)
            diffs = differences(reference, crashed)
            mismatches = sum(len(d) for d in diffs.values())
            print(
                "compared: "
                + ", ".join(f"{name} {len(reference[name])}" for name in reference)
                + f"; mismatches={mismatches}"
            )
            assert mismatches == 0, {name: d[:5] for name, d in diffs.items() if d}
            assert duplicate_payments(crash_engine) == 0
            assert duplicate_payments(ref_engine) == 0
            check_against_chain(reference, plan, specs)
            redelivered, torn = check_callbacks(crash_engine, receiver, secrets["crash"], "/crash")
            assert check_callbacks(ref_engine, receiver, secrets["ref"], "/ref")[1] == 0  # nothing torn
            print(
                f"callbacks: {sum(len(v) for v in crashed['events'].values())} events, all delivered; "
                f"{redelivered} received more than once (same webhook-id), {torn} requests torn by a kill"
            )
        assert len(kills) == KILLS
        assert all(k < plan.tip for k in kills)  # every kill landed before the scan was done
        print(f"crash suite total: {time.monotonic() - started:.1f} s")
    finally:
        for engine in engines:
            engine.dispose()
        node.close()


def kill_repeatedly(
    engine: Engine, db_url: str, networks: Path, log_path: Path, plan: Plan, rng: random.Random
) -> list[int]:
    """SIGKILL a worker KILLS times, each a random number of blocks into its scan plus a random
    few milliseconds; returns the cursor height seen just before each kill."""
    kills: list[int] = []
    for done in range(KILLS):
        at_start = cursor_of(engine)
        position = plan.start_block - 1 if at_start is None else at_start
        budget = (plan.tip - FINAL_RESERVE - position) // (KILLS - done)  # leave work for later kills
        target = position + rng.randint(1, max(1, budget))
        worker = WorkerProcess(db_url, networks, log_path)
        try:
            wait_for(
                f"block {target} (kill {done + 1})",
                lambda target=target: (cursor_of(engine) or 0) >= target,
                worker,
                log_path,
                timeout=60,
            )
            time.sleep(rng.uniform(0.0, STEP_SECONDS))  # kills land anywhere in a step
            kills.append(cursor_of(engine) or 0)
            worker.kill()
        finally:
            worker.ensure_dead()
    return kills


def check_callbacks(engine: Engine, receiver: Receiver, secret: str, path: str) -> tuple[int, int]:
    """Every event delivered and received complete at least once under its one webhook-id, with its
    stored body and a valid signature. A request torn by a kill (fewer bytes than its content-length)
    must be a prefix of its event's body.

    Returns (events received complete more than once, torn requests)."""
    with session_scope(engine) as session:
        events = {e.webhook_id: e for e in session.exec(select(CallbackEvent))}
        assert {e.state for e in events.values()} == {"delivered"}
        bodies = {wid: e.body.encode() for wid, e in events.items()}
    got = receiver.on(path)
    complete = [r for r in got if not r.torn]
    torn = [r for r in got if r.torn]
    arrivals = Counter(r.webhook_id for r in complete)
    assert set(arrivals) == set(bodies)
    for request in complete:
        assert request.body == bodies[request.webhook_id]
        verify(request, secret)
    for request in torn:
        assert bodies[request.webhook_id].startswith(request.body)
    return sum(1 for n in arrivals.values() if n > 1), len(torn)


if __name__ == "__main__":
    child()
