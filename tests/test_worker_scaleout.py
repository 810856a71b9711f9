"""Scale-out on PostgreSQL: three real ``paywatch worker`` processes, two anvil chains, a real receiver.

Every payment is credited exactly once, every invoice reaches its status, every callback arrives
with a valid Standard Webhooks signature, no network is ever scanned by two replicas at once (read
from the workers' JSON logs: each scan is logged at its start and its end with network and pid),
and after a ``kill -9`` of a lease holder another replica takes the network over within about one
poll interval.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig, Settings, load_config
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, Payment, Store
from paywatch.stores import create_store
from tests.conftest import PG_URL, fresh_postgres_database
from tests.support.callback_receiver import Receiver, verify
from tests.support.worker_procs import (
    USDT,
    Devnet,
    PaywatchProcess,
    ScanInterval,
    network_entry,
    paywatch_env,
    scan_intervals,
    ts,
    wait_for,
    write_networks,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PG_URL is None, reason="needs PostgreSQL: set PAYWATCH_TEST_DATABASE_URL"),
]

POLL = 0.5
REPLICAS = 3
ETH = 10**18


@dataclass
class Plan:
    """One invoice and how the test pays it."""

    network: str
    asset: str
    amount: str
    payments: list[int]
    status: str
    flags: list[str]
    invoice_id: str = ""
    address: str = ""


SCENARIOS: list[tuple[str, str, list[int], str, list[str]]] = [
    ("USDT", "10", [10 * USDT], "COMPLETED", []),
    ("USDT", "7.5", [3 * USDT, 4_500_000], "COMPLETED", []),
    ("USDT", "5", [6 * USDT], "COMPLETED", ["overpaid"]),
    ("USDT", "20", [5 * USDT], "PARTIAL", []),
    ("ETH", "0.01", [ETH // 100], "COMPLETED", []),
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_postgres_database()


@pytest.fixture
def devnets() -> Iterator[dict[str, Devnet]]:
    nets: dict[str, Devnet] = {}
    try:
        nets["alpha"] = Devnet.start("--block-time", "1", "--chain-id", "31337")
        nets["beta"] = Devnet.start("--block-time", "1", "--chain-id", "31338")
        yield nets
    finally:
        for net in nets.values():
            net.close()


def pay(devnets: dict[str, Devnet], plans: list[Plan]) -> None:
    """Send every payment of ``plans``, then wait until the last one of each chain is mined."""
    last: dict[str, str] = {}
    for plan in plans:
        net = devnets[plan.network]
        for units in plan.payments:
            if plan.asset == "USDT":
                last[plan.network] = net.chain.token_transfer(net.usdt, plan.address, units)
            else:
                last[plan.network] = net.chain.send_eth(plan.address, units)
    for name, tx in last.items():
        assert devnets[name].chain.receipt_status(devnets[name].chain.wait(tx)) == 1


def settled(engine: Engine, plans: list[Plan]) -> bool:
    """All ``plans`` have their expected status and every callback event is delivered."""
    with session_scope(engine) as session:
        statuses = {i.id: i.status for i in session.exec(select(Invoice))}
        undelivered = session.exec(
            select(func.count()).select_from(CallbackEvent).where(col(CallbackEvent.state) != "delivered")
        ).one()
    return undelivered == 0 and all(statuses[p.invoice_id] == p.status for p in plans)


def overlaps(intervals: list[ScanInterval], killed: int, killed_at: float) -> list[tuple[ScanInterval, ScanInterval]]:
    """Pairs of scans of one network by different pids whose [start, end] intersect."""
    bad = []
    by_network: dict[str, list[ScanInterval]] = defaultdict(list)
    for i in intervals:
        end = i.end if i.end is not None else (killed_at if i.pid == killed else float("inf"))
        by_network[i.network].append(ScanInterval(i.network, i.pid, i.start, end))
    for items in by_network.values():
        items.sort(key=lambda i: i.start)
        latest = items[0]  # the interval that ends last among those seen so far
        for b in items[1:]:
            assert latest.end is not None and b.end is not None
            if b.start < latest.end:
                bad.append((latest, b))
            if b.end > latest.end:
                latest = b
    return bad


def test_three_replicas_credit_once_deliver_all_and_take_over(
    pg_url: str, devnets: dict[str, Devnet], tmp_path: Path
) -> None:
    networks = write_networks(
        tmp_path / "networks.yaml",
        {
            name: network_entry([net.node.url], net.usdt, chain_id=31337 + i, poll=POLL)
            for i, (name, net) in enumerate(devnets.items())
        },
    )
    config: AppConfig = load_config(Settings(database_url=pg_url, networks=networks, allow_private_callbacks=True))
    engine = make_engine(pg_url)
    receiver = Receiver().__enter__()
    workers: list[PaywatchProcess] = []
    try:
        now = datetime.now(UTC)
        with session_scope(engine) as session:
            created = create_store(session, "scale-out shop", now, callback_url=receiver.url("/hook"))
            secret = created.store.webhook_secret
        env = paywatch_env(pg_url, networks)
        workers = [PaywatchProcess(["worker"], env, tmp_path / f"worker{n}.log") for n in range(REPLICAS)]

        plans = [
            Plan(name, asset, amount, payments, status, flags)
            for _ in range(3)
            for name in devnets
            for asset, amount, payments, status, flags in SCENARIOS
        ]
        with session_scope(engine) as session:
            store = session.get(Store, created.store.id)
            assert store is not None
            for plan in plans:
                invoice = create_invoice(
                    session, config, store, InvoiceRequest(plan.network, plan.asset, plan.amount, expires_in=3600), now
                )
                plan.invoice_id, plan.address = invoice.id, invoice.address

        def cursors_set() -> bool:
            with session_scope(engine) as session:
                states = list(session.exec(select(NetworkState)))
            return len([s for s in states if s.cursor_height is not None]) == len(devnets)

        wait_for("a first scan of each network", cursors_set, timeout=60)

        third = len(plans) // 3
        batches = [plans[:third], plans[third : 2 * third], plans[2 * third :]]
        running = list(workers)

        def handover(sig: signal.Signals) -> tuple[PaywatchProcess, float, float]:
            """Stop the replica scanning "alpha" with ``sig``; (it, when, seconds until another scans)."""
            records = [r for w in running for r in w.lines()]
            holder = max(
                (r for r in records if r.get("logger") == "paywatch.worker.scan" and r.get("network") == "alpha"),
                key=ts,
            )["pid"]
            victim = next(w for w in running if w.pid == holder)
            victim.proc.send_signal(sig)
            at = time.time()
            assert victim.wait(timeout=120) == (-9 if sig == signal.SIGKILL else 0), victim.text()[-2000:]
            running.remove(victim)

            def taken_over() -> float | None:
                for w in running:
                    for r in w.lines():
                        if r.get("msg") == "scan started" and r.get("network") == "alpha" and ts(r) > at:
                            return ts(r)
                return None

            return victim, at, wait_for("another replica scanning alpha", taken_over, timeout=30, every=0.02) - at

        pay(devnets, batches[0])
        wait_for("the first third settled, callbacks delivered", lambda: settled(engine, batches[0]), timeout=40)
        # kill -9 the holder of "alpha" while the callback queue is empty (a claimed callback would
        # wait for its claim to expire, minutes by default)
        victim, killed_at, takeover = handover(signal.SIGKILL)
        print(f"\ntakeover after kill -9 of the lease holder: {takeover:.2f} s (poll interval {POLL} s)")

        pay(devnets, batches[1])
        wait_for("the second third settled", lambda: settled(engine, batches[0] + batches[1]), timeout=40)
        # a graceful stop hands the lease over at once (released, not left to the connection's death)
        _, _, graceful = handover(signal.SIGTERM)
        print(f"takeover after SIGTERM of the lease holder: {graceful:.2f} s")

        pay(devnets, batches[2])
        wait_for("every invoice settled and every callback delivered", lambda: settled(engine, plans), timeout=40)
        for w in running:
            w.signal(signal.SIGTERM)
        for w in running:
            assert w.wait(timeout=120) == 0, w.text()[-2000:]

        # --- every payment credited exactly once, with the right amounts --------------------------
        with session_scope(engine) as session:
            payments = list(session.exec(select(Payment)))
            invoices = {i.id: i for i in session.exec(select(Invoice))}
            dupes = session.connection().execute(
                text("SELECT network, tx_hash, log_index FROM payments GROUP BY 1, 2, 3 HAVING count(*) > 1")
            )
            assert list(dupes) == []
            events = list(session.exec(select(CallbackEvent)))
        by_invoice: dict[str, list[int]] = defaultdict(list)
        for p in payments:
            assert not p.orphaned
            by_invoice[p.invoice_id].append(p.amount)
        for plan in plans:
            invoice = invoices[plan.invoice_id]
            assert sorted(by_invoice[plan.invoice_id]) == sorted(plan.payments), plan
            assert invoice.amount_paid == sum(plan.payments)
            assert (invoice.status, invoice.flags) == (plan.status, plan.flags), plan
        assert len(payments) == sum(len(p.payments) for p in plans)

        # --- every callback delivered, signatures verified by standardwebhooks ---------------------
        assert events and all(e.state == "delivered" for e in events)
        seen = {r.webhook_id for r in receiver.on("/hook")}
        assert {e.webhook_id for e in events} <= seen
        for received in receiver.on("/hook"):
            verify(received, secret)
        # no invoice got the same event twice (a stale read would repeat a transition)
        kinds = [(e.invoice_id, e.type, e.status_version) for e in events]
        assert len(kinds) == len(set(kinds))
        assert {(p.invoice_id, "invoice.completed") for p in plans if p.status == "COMPLETED"} <= {
            (e.invoice_id, e.type) for e in events
        }

        # --- no network scanned by two replicas at once -----------------------------------------------
        records = [r for w in workers for r in w.lines()]
        intervals = scan_intervals(records)
        pids = {i.network: {j.pid for j in intervals if j.network == i.network} for i in intervals}
        assert len(pids["alpha"]) == REPLICAS, "alpha was not taken over twice"
        assert overlaps(intervals, victim.pid, killed_at) == []
        assert not [r for r in records if "two scanners" in str(r.get("msg", ""))]
        assert not [r for r in records if "raw" in r and "Traceback" in r["raw"]]
        print(
            f"{len(plans)} invoices, {len(payments)} payments, {len(events)} callbacks, "
            f"{len(intervals)} scans by {len({i.pid for i in intervals})} replicas"
        )
    finally:
        for w in workers:
            w.close()
        receiver.stop()
        engine.dispose()
