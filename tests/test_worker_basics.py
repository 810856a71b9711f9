"""The worker as a process: one worker per SQLite file, a graceful SIGTERM, ``paywatch run``,
/metrics and the JSON logs. Real ``python -m paywatch`` processes, anvil and a real receiver.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool
from sqlmodel import col, select

from paywatch.chains.base import BlockRef, ChainAdapter, Heights, ScannedRange, WatchPredicate
from paywatch.chains.evm import EvmAdapter
from paywatch.chains.tron_http import RetryPolicy, TronHttp
from paywatch.config import Settings, load_config
from paywatch.errors import RetryableChainError
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.lease import Lease, lock_key
from paywatch.metrics import REGISTRY
from paywatch.redact import render_endpoint
from paywatch.store.db import make_engine, session_scope
from paywatch.store.models import Invoice, NetworkState, Payment, ScannedBlock, Store
from paywatch.stores import create_store
from paywatch.worker import Worker
from tests.conftest import PG_URL, fresh_postgres_database
from tests.support.callback_receiver import Receiver, Reply, verify
from tests.support.databases import OTHER_CLIENT_BACKENDS, fresh_sqlite_database
from tests.support.ports import free_port
from tests.support.worker_procs import (
    USDT,
    Devnet,
    PaywatchProcess,
    network_entry,
    paywatch_env,
    scan_intervals,
    wait_for,
    write_networks,
)

DEAD_RPC = "http://127.0.0.1:1"


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    net = Devnet.start()  # automine: the test decides when blocks appear
    yield net
    net.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return fresh_sqlite_database(tmp_path / "paywatch.db")


def started(proc: PaywatchProcess) -> bool:
    return any(r.get("msg", "").startswith("worker started") for r in proc.lines())


@pytest.mark.slow
def test_second_worker_on_one_sqlite_file_refuses_to_start(sqlite_url: str, tmp_path: Path) -> None:
    networks = write_networks(tmp_path / "networks.yaml", {"devnet": network_entry([DEAD_RPC], "0x" + "11" * 20)})
    env = paywatch_env(sqlite_url, networks)
    first = PaywatchProcess(["worker"], env, tmp_path / "first.log")
    second: PaywatchProcess | None = None
    try:
        wait_for("the first worker", lambda: started(first), timeout=30)
        second = PaywatchProcess(["worker"], env, tmp_path / "second.log")
        assert second.wait(timeout=120) == 2
        message = second.text()
        assert "error: another paywatch worker" in message
        assert f"pid {first.pid}" in message and "use PostgreSQL to run several" in message
        assert first.proc.poll() is None  # the first one keeps running
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.slow
def test_sigterm_finishes_the_running_step_commits_and_exits_0(devnet: Devnet, sqlite_url: str, tmp_path: Path) -> None:
    chain = devnet.chain
    start = chain.height() + 1
    networks = write_networks(
        tmp_path / "networks.yaml",
        {"devnet": {**network_entry([devnet.node.url], devnet.usdt, poll=0.05, batch=4), "start_block": start}},
    )
    config = load_config(Settings(database_url=sqlite_url, networks=networks))
    engine = make_engine(sqlite_url)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        store = create_store(session, "shop", now).store
        invoices = [
            create_invoice(session, config, store, InvoiceRequest("devnet", "USDT", "3", expires_in=3600), now)
            for _ in range(8)
        ]
        targets = [(i.id, i.address) for i in invoices]
    paid_in: dict[str, int] = {}
    for invoice_id, address in targets:  # one payment every ~40 blocks over ~330 blocks
        chain.mine(40)
        tx = chain.token_transfer(devnet.usdt, address, 3 * USDT)
        assert chain.receipt_status(chain.wait(tx)) == 1
        paid_in[invoice_id] = chain.height()
    chain.mine(10)
    tip = chain.height()

    env = paywatch_env(sqlite_url, networks)
    worker = PaywatchProcess(["worker"], env, tmp_path / "worker.log")
    try:

        def mid_scan() -> bool:
            scan_lines = [r for r in worker.lines() if r.get("logger") == "paywatch.worker.scan"]
            cursor = _cursor(engine)
            return bool(scan_lines and scan_lines[-1]["msg"] == "scan started" and cursor and cursor >= start + 40)

        wait_for("a scan in progress, a few steps stored", mid_scan, timeout=30, every=0.02)
        signalled = time.time()
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
    finally:
        worker.close()
    records = worker.lines()
    assert records[-1]["msg"] == "worker stopped"
    scans = scan_intervals(records)
    assert scans and all(s.end is not None for s in scans), "a scan was cut off"
    finished = [r for r in records if str(r.get("msg", "")).startswith("scan finished") and r.get("block")]
    cursor = _cursor(engine)
    assert cursor is not None and cursor < tip, "SIGTERM came too late to interrupt the catch-up"
    assert finished[-1]["block"] == cursor  # the last logged step is the one committed
    # the scan running when the signal came finished
    assert any(s.start <= signalled and s.end is not None and s.end >= signalled for s in scans)
    with session_scope(engine) as session:
        state = session.get(NetworkState, "devnet")
        assert state is not None
        stored = session.exec(select(ScannedBlock.number).order_by(col(ScannedBlock.number))).all()
        credited = {p.invoice_id: p.block_number for p in session.exec(select(Payment))}
    assert state.cursor_hash == devnet.node.rpc("eth_getBlockByNumber", hex(cursor), False)["hash"]
    assert list(stored) == list(range(start, cursor + 1))
    assert credited == {i: b for i, b in paid_in.items() if b <= cursor}

    # a restart resumes from the cursor: every payment is credited once, nothing skipped
    worker = PaywatchProcess(["worker"], env, tmp_path / "worker2.log")
    try:
        wait_for("the catch-up", lambda: _cursor(engine) == tip, timeout=30)
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
    finally:
        worker.close()
    with session_scope(engine) as session:
        payments = list(session.exec(select(Payment)))
        statuses = {i.id: i.status for i in session.exec(select(Invoice))}
    assert sorted((p.invoice_id, p.block_number, p.amount) for p in payments) == sorted(
        (i, b, 3 * USDT) for i, b in paid_in.items()
    )
    assert set(statuses.values()) == {"COMPLETED"}
    engine.dispose()


def _cursor(engine: object) -> int | None:
    with session_scope(engine) as session:  # type: ignore[arg-type]
        state = session.get(NetworkState, "devnet")
        return None if state is None else state.cursor_height


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition ``text`` (0.0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


@pytest.mark.slow
def test_run_serves_the_api_and_scans_with_metrics_and_json_logs(
    devnet: Devnet, sqlite_url: str, tmp_path: Path
) -> None:
    chain = devnet.chain
    networks = write_networks(
        tmp_path / "networks.yaml", {"devnet": network_entry([DEAD_RPC, devnet.node.url], devnet.usdt, poll=0.3)}
    )
    engine = make_engine(sqlite_url)
    port = free_port()
    with Receiver() as receiver:
        with session_scope(engine) as session:
            created = create_store(session, "shop", datetime.now(UTC), callback_url=receiver.url("/hook"))
            key, secret = created.api_key, created.store.webhook_secret
        proc = PaywatchProcess(["run", "--port", str(port)], paywatch_env(sqlite_url, networks), tmp_path / "run.log")
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Api-Key": key}, timeout=10)

            def scanned() -> bool:
                try:
                    health = api.get("/healthz").json()
                except httpx.HTTPError:
                    return False
                return health["networks"]["devnet"]["cursor"] is not None

            wait_for("the API and a first scan", scanned, timeout=30)
            reply = api.post("/v1/invoices", json={"network": "devnet", "asset": "USDT", "amount": "12.5"})
            assert reply.status_code == 201, reply.text
            invoice = reply.json()
            tx = chain.token_transfer(devnet.usdt, invoice["address"], 12_500_000)
            stray = chain.send_eth(invoice["address"], 1234)  # ETH to a USDT invoice: unmatched
            chain.mine(2)

            def completed() -> bool:
                return api.get(f"/v1/invoices/{invoice['id']}").json()["status"] == "COMPLETED"

            wait_for("the invoice COMPLETED over HTTP", completed, timeout=30)
            wait_for("the completed callback", lambda: len(receiver.on("/hook")) >= 3, timeout=15)
            body = api.get(f"/v1/invoices/{invoice['id']}").json()
            assert body["amount_paid"] == "12.5"
            types = [verify(r, secret)["type"] for r in receiver.on("/hook")]
            assert "invoice.completed" in types

            # an invoice whose own callback URL fails: its event waits in the queue for a retry
            receiver.plan("/down", *[Reply(500, b"down")] * 5)
            down = api.post(
                "/v1/invoices",
                json={"network": "devnet", "asset": "USDT", "amount": "1", "callback_url": receiver.url("/down")},
            )
            assert down.status_code == 201, down.text
            wait_for("a failed delivery", lambda: receiver.on("/down"), timeout=15)

            def failure_recorded() -> str | None:  # the attempt is recorded just after the reply
                text = api.get("/metrics").text
                return text if _metric(text, "paywatch_callback_deliveries_total", result="failed") >= 1 else None

            metrics = wait_for("the failed attempt in /metrics", failure_recorded, timeout=15)
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        finally:
            proc.close()

    # /metrics: head lag, blocks, transfers, RPC calls and errors per endpoint, queue, deliveries, transitions
    assert 'paywatch_head_lag_blocks{network="devnet"}' in metrics
    assert _metric(metrics, "paywatch_head_lag_blocks", network="devnet") >= 0
    assert 'paywatch_head_lag_seconds{network="devnet"}' in metrics
    assert _metric(metrics, "paywatch_blocks_scanned_total", network="devnet") >= 3
    assert _metric(metrics, "paywatch_transfers_total", network="devnet", result="matched") == 1
    assert _metric(metrics, "paywatch_transfers_total", network="devnet", result="unmatched") == 1
    anvil_endpoint, dead_endpoint = render_endpoint(devnet.node.url), render_endpoint(DEAD_RPC)
    assert _metric(metrics, "paywatch_rpc_calls_total", network="devnet", endpoint=anvil_endpoint) >= 3
    assert _metric(metrics, "paywatch_rpc_errors_total", network="devnet", endpoint=anvil_endpoint) == 0
    assert _metric(metrics, "paywatch_rpc_errors_total", network="devnet", endpoint=dead_endpoint) >= 1
    assert _metric(metrics, "paywatch_rpc_calls_total", network="devnet", endpoint=dead_endpoint) >= 1
    assert _metric(metrics, "paywatch_callback_queue_depth", state="pending") == 1
    assert _metric(metrics, "paywatch_callback_deliveries_total", result="failed") >= 1
    assert _metric(metrics, "paywatch_callback_deliveries_total", result="delivered") >= 3
    assert _metric(metrics, "paywatch_status_transitions_total", status="COMPLETED") == 1

    # JSON logs carry invoice id, network and tx hash where they apply
    records = proc.lines()
    assert "worker stopped" in [r.get("msg") for r in records]  # SIGTERM stopped the worker gracefully too
    payment = [r for r in records if r.get("tx_hash") == tx and r.get("invoice_id") == invoice["id"]]
    assert payment and payment[0]["network"] == "devnet" and payment[0]["logger"] == "paywatch.ledger"
    assert [r for r in records if r.get("tx_hash") == stray and r.get("network") == "devnet"]
    assert [r for r in records if r.get("invoice_id") == invoice["id"] and "COMPLETED" in r["msg"]]
    with session_scope(engine) as session:
        assert session.exec(select(Store)).one()
    engine.dispose()


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_tron_transport_counts_calls_and_errors_per_endpoint() -> None:
    with Receiver(Reply(200, b'{"blockID": "00"}')) as good, Receiver(Reply(503, b"busy")) as bad:
        bad_url, good_url = bad.url(""), good.url("")
        labels_bad = {"network": "tron-metrics", "endpoint": render_endpoint(bad_url)}
        labels_good = {"network": "tron-metrics", "endpoint": render_endpoint(good_url)}
        before = [
            _sample(f"paywatch_rpc_{k}_total", **lbl) for k in ("calls", "errors") for lbl in (labels_bad, labels_good)
        ]
        http = TronHttp(
            (bad_url, good_url),
            policy=RetryPolicy(attempts=3, backoff=0.0),
            sleep=lambda _s: None,
            network="tron-metrics",
        )
        try:
            assert http.post("wallet/getnowblock") == {"blockID": "00"}
        finally:
            http.close()
        after = [
            _sample(f"paywatch_rpc_{k}_total", **lbl) for k in ("calls", "errors") for lbl in (labels_bad, labels_good)
        ]
        assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 0]

        only_bad = TronHttp(
            (bad_url,), policy=RetryPolicy(attempts=2, backoff=0.0), sleep=lambda _s: None, network="tron-metrics"
        )
        try:
            with pytest.raises(RetryableChainError):
                only_bad.post("wallet/getnowblock")
        finally:
            only_bad.close()
        assert _sample("paywatch_rpc_errors_total", **labels_bad) - after[1] == 2


@pytest.fixture
def pg_url() -> Iterator[str]:
    if PG_URL is None:
        pytest.skip("needs PostgreSQL: set PAYWATCH_TEST_DATABASE_URL")
    yield from fresh_postgres_database()


def test_leases_hold_their_own_idle_connections_and_notice_a_lost_lock(pg_url: str) -> None:
    # a pool of ONE connection: leases must not take it, or the scans would starve
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=1)
    holder, other_network, rival = Lease(engine, "scan:x"), Lease(engine, "scan:y"), Lease(engine, "scan:x")
    try:
        assert holder.acquire() and other_network.acquire() and holder.acquire()
        assert not rival.acquire() and not rival.held
        key = holder.key & (2**64 - 1)
        with engine.connect() as conn:
            states = conn.execute(
                text(f"SELECT state FROM pg_stat_activity WHERE {OTHER_CLIENT_BACKENDS}")
            ).scalars()
            assert sorted(states) == ["idle", "idle", "idle"]  # never "idle in transaction"
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :hi AND objid = :lo AND granted"
                ),
                {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
            )
        wait_for("the rival to take the lease", rival.acquire, timeout=10, every=0.05)
        assert not holder.acquire() and not holder.held  # the old holder notices and stands down
        assert other_network.acquire()
    finally:
        for lease in (holder, other_network, rival):
            lease.release()
        engine.dispose()


class LeaseThief:
    """A ChainAdapter that lets a rival replica take the network's lease at the start of the
    ``at``-th scan step (its ``at``-th ``heights()`` call, made by the scanning thread once any
    prefetched read has finished, so the step count does not depend on thread timing).

    The rival first queues on the advisory lock, and only then is the holder's PostgreSQL session
    killed: the lock passes straight to the rival, and the holder cannot take it back in between.
    """

    def __init__(self, inner: ChainAdapter, engine: Engine, key: int, at: int) -> None:
        self.inner, self.engine, self.key, self.at = inner, engine, key, at
        self.steps = self.reads = 0
        self.rival_pid: int | None = None
        self._rival_engine = create_engine(engine.url, poolclass=NullPool)
        self._rival: Connection | None = None

    def heights(self) -> Heights:
        self.steps += 1
        if self.steps == self.at:
            self._steal()
        return self.inner.heights()

    def block_ref(self, number: int) -> BlockRef:
        return self.inner.block_ref(number)

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        return self.inner.transaction_transfers(tx_hash, watched)

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        self.reads += 1
        return self.inner.fetch_range(start, end, watched)

    def _advisory(self, sql: str, **params: int) -> list[Any]:
        key = self.key & (2**64 - 1)
        where = "locktype = 'advisory' AND classid = :hi AND objid = :lo"
        with self.engine.connect() as conn:
            rows = conn.execute(text(sql.format(where=where)), {"hi": key >> 32, "lo": key & 0xFFFFFFFF, **params})
            return list(rows.scalars())

    def _steal(self) -> None:
        rival = self._rival = self._rival_engine.connect()
        self.rival_pid = pid = int(rival.execute(text("SELECT pg_backend_pid()")).scalar_one())
        queued = threading.Thread(
            target=lambda: rival.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key}), daemon=True
        )
        queued.start()
        wait_for(
            "the rival to queue for the lease",
            lambda: self._advisory("SELECT pid FROM pg_locks WHERE {where} AND pid = :pid AND NOT granted", pid=pid),
            timeout=60,
            every=0.02,
        )
        self._advisory("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {where} AND granted")
        queued.join(timeout=60)
        assert not queued.is_alive(), "the rival never got the lease"

    def rival_holds(self) -> bool:
        sql = "SELECT pid FROM pg_locks WHERE {where} AND granted AND pid = :pid"
        return bool(self._advisory(sql, pid=self.rival_pid or 0))

    def close(self) -> None:
        if self._rival is not None:
            self._rival.close()
        self._rival_engine.dispose()


def test_a_replica_that_lost_its_lease_stops_between_steps(
    pg_url: str, devnet: Devnet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start = devnet.chain.height() + 1
    devnet.chain.mine(40)
    networks = write_networks(
        tmp_path / "networks.yaml",
        {"devnet": {**network_entry([devnet.node.url], devnet.usdt, batch=4), "start_block": start}},
    )
    config = load_config(Settings(database_url=pg_url, networks=networks))
    engine = make_engine(pg_url)
    thief = LeaseThief(EvmAdapter(config.networks["devnet"]), engine, lock_key("scan:devnet"), at=3)
    worker = Worker(config, engine, adapters={"devnet": thief})
    try:
        with caplog.at_level(logging.INFO, logger="paywatch.worker"):
            assert worker.scan("devnet") == 12  # three steps of 4 blocks, then it notices and stops
        assert "lost the scan lease of devnet" in caplog.text
        assert not worker.leases["devnet"].held and thief.rival_holds()
        assert thief.reads == 4  # the 3 steps' ranges, plus the one prefetched before it noticed
        assert worker.scan("devnet") == 0 and thief.reads == 4  # no more reads while the rival holds it
        assert _cursor(engine) == start + 11
    finally:
        thief.close()
        for scanner in worker.scanners.values():
            scanner.close()
        for lease in worker.leases.values():
            lease.release()
        engine.dispose()
