"""The background worker: APScheduler wiring only.

Jobs: each network's scan (at its poll interval, one instance, coalesced, only while this replica
holds the network's lease), the confirmations refresh, the expiry sweep, callback dispatch, and
hosted checkout's rate refresh (one replica, every ``PAYWATCH_RATES_REFRESH_SECONDS``) and fiat
invoice re-evaluation.
SIGTERM lets the running steps finish and commit, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import Engine

from paywatch.api.context import utc_now
from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.chains.base import ChainAdapter
from paywatch.chains.registry import make_adapter
from paywatch.checkout.context import Checkout, default_checkout
from paywatch.checkout.jobs import CheckoutJobs
from paywatch.config import AppConfig
from paywatch.errors import RetryableChainError
from paywatch.lease import Lease, SingleWorkerLock
from paywatch.ledger import Ledger
from paywatch.metrics import BLOCKS_SCANNED, SCAN_ERRORS, TRANSFERS
from paywatch.scanner import Scanner
from paywatch.store.db import session_scope

log = logging.getLogger("paywatch.worker")
#: one line when a replica starts and ends a scan of a network (silence with this logger's level)
scan_log = logging.getLogger("paywatch.worker.scan")

SWEEP_SECONDS = 15.0
DISPATCH_SECONDS = 1.0
CHECKOUT_SECONDS = 1.0
MAX_STEPS_PER_RUN = 50


class Worker:
    """Runs every periodic job of one replica until stopped."""

    def __init__(
        self,
        config: AppConfig,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utc_now,
        adapters: dict[str, ChainAdapter] | None = None,
        dispatcher: Dispatcher | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
        dispatch_seconds: float = DISPATCH_SECONDS,
        checkout: Checkout | None = None,
        checkout_seconds: float = CHECKOUT_SECONDS,
        single: SingleWorkerLock | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.ledger = Ledger(config.networks)
        adapters = adapters or {name: make_adapter(net) for name, net in config.networks.items()}
        self.scanners = {
            name: Scanner(config.networks[name], adapter, engine, self.ledger, clock)
            for name, adapter in adapters.items()
        }
        self.leases = {name: Lease(engine, f"scan:{name}") for name in self.scanners}
        # a network's scan and its confirmations refresh never run at the same time in one replica
        self._network_locks = {name: threading.Lock() for name in self.scanners}
        self.sweep_lease = Lease(engine, "expiry-sweep")
        self.dispatcher = dispatcher or Dispatcher(engine, config.settings, clock)
        self.sweep_seconds = sweep_seconds
        self.dispatch_seconds = dispatch_seconds
        self.checkout_jobs = CheckoutJobs(config, engine, checkout or default_checkout(config), clock)
        self.checkout_seconds = checkout_seconds
        self.rates_lease = Lease(engine, "rates-refresh")
        self.stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        # ``single``: the caller took the SQLite lock already, to refuse before building the adapters
        self._single = single or SingleWorkerLock(config.settings.database_url)

    # --- jobs (each is safe to run concurrently with the others) --------------------------------

    def scan(self, network: str) -> int:
        """Scan ``network`` until caught up (bounded), if this replica holds its lease."""
        with self._network_locks[network]:
            lease = self.leases[network]
            had_lease = lease.held and lease.postgres
            if not lease.acquire():
                return 0
            if lease.postgres and not had_lease:
                log.info("took the scan lease of %s", network, extra={"network": network})
            started = time.monotonic()
            scan_log.info("scan started", extra={"network": network})
            blocks, last = self._scan_steps(network)
            scan_log.info(
                "scan finished: %d blocks in %.3f s",
                blocks,
                time.monotonic() - started,
                extra={"network": network, "block": last},
            )
            return blocks

    def _scan_steps(self, network: str) -> tuple[int, int | None]:
        """Steps until caught up (at most MAX_STEPS_PER_RUN): blocks stored and the last one."""
        scanner = self.scanners[network]
        blocks = 0
        last: int | None = None
        for n in range(MAX_STEPS_PER_RUN):
            if self.stopping.is_set():
                break
            if n and not self._still_leased(network):
                break
            try:
                result = scanner.step()
            except Exception as exc:  # logged and retried next poll; the cursor has not moved
                SCAN_ERRORS.labels(network).inc()
                log.warning("scan step failed: %s", exc, extra={"network": network})
                break
            blocks += result.blocks
            last = result.end if result.end is not None else last
            BLOCKS_SCANNED.labels(network).inc(result.blocks)
            TRANSFERS.labels(network, "matched").inc(result.matched)
            TRANSFERS.labels(network, "unmatched").inc(result.unmatched)
            if result.caught_up:
                break
        return blocks, last

    def _still_leased(self, network: str) -> bool:
        """Re-confirm the lease between steps of a long catch-up (its connection may have died)."""
        try:
            if self.leases[network].acquire():
                return True
        except Exception as exc:  # the database is unreachable: stop, the next poll retries
            log.warning("cannot confirm the scan lease: %s", exc, extra={"network": network})
            return False
        log.warning("lost the scan lease of %s; another replica scans it now", network, extra={"network": network})
        return False

    def refresh(self, network: str) -> int:
        """Re-evaluate confirmations of ``network`` (the lease holder only; skipped while it scans)."""
        lock = self._network_locks[network]
        if not self.leases[network].held or not lock.acquire(blocking=False):
            return 0
        try:
            with session_scope(self.engine) as session:
                return self.ledger.refresh_confirmations(session, network, self.clock())
        finally:
            lock.release()

    def sweep(self) -> int:
        if not self.sweep_lease.acquire():
            return 0
        with session_scope(self.engine) as session:
            return self.ledger.expiry_sweep(session, self.clock())

    def refresh_rates(self) -> int:
        """The scheduled rate refresh, by the replica that holds its lease."""
        return self.checkout_jobs.refresh_rates() if self.rates_lease.acquire() else 0

    def settle_checkout(self) -> int:
        return self.checkout_jobs.settle()

    # --- scheduling ------------------------------------------------------------------------------

    def _threaded(self, func: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[None]]:
        name = getattr(func, "__name__", str(func))

        async def job() -> None:
            await self._run_job(name, lambda: asyncio.to_thread(func, *args))

        return job

    async def _dispatch(self) -> None:
        await self._run_job("dispatch", self.dispatcher.run_once)

    async def _run_job(self, name: str, start: Callable[[], Awaitable[Any]]) -> None:
        """Run one job's work as a task of its own, tracked in ``_inflight`` until it is done.

        The scheduler's shutdown cancels the job coroutine, never the work: the work is shielded,
        so :meth:`run` can wait for a running scan step to commit before it releases the leases.
        """
        if self.stopping.is_set():
            return
        task = asyncio.ensure_future(self._logged(name, start()))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:  # scheduler shutdown: run() waits for the task itself
            return

    @staticmethod
    async def _logged(name: str, work: Awaitable[Any]) -> None:
        try:
            await work
        except Exception:
            log.exception("job %s failed", name)

    def build_scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone="UTC")
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "next_run_time": utc_now()}
        for name in self.scanners:
            interval = self.config.networks[name].poll_interval
            scheduler.add_job(
                self._threaded(self.scan, name), "interval", seconds=interval, id=f"scan:{name}", **common
            )
            scheduler.add_job(
                self._threaded(self.refresh, name), "interval", seconds=interval, id=f"refresh:{name}", **common
            )
        scheduler.add_job(self._threaded(self.sweep), "interval", seconds=self.sweep_seconds, id="sweep", **common)
        scheduler.add_job(self._dispatch, "interval", seconds=self.dispatch_seconds, id="dispatch", **common)
        every = self.checkout_jobs.checkout.rates.config.refresh_seconds
        scheduler.add_job(self._threaded(self.refresh_rates), "interval", seconds=every, id="rates", **common)
        settle = self._threaded(self.settle_checkout)
        scheduler.add_job(settle, "interval", seconds=self.checkout_seconds, id="checkout", **common)
        return scheduler

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT); running steps finish and commit first."""
        self._single.acquire()
        try:
            await asyncio.to_thread(self.preflight)
        except BaseException:
            self._single.release()
            raise
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
        scheduler = self.build_scheduler()
        scheduler.start()
        log.info("worker started: networks %s", ", ".join(self.scanners) or "none")
        try:
            await self.stopping.wait()
        finally:
            scheduler.pause()  # no new runs; the running ones finish and commit first
            while self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
            scheduler.shutdown(wait=False)
            for scanner in self.scanners.values():
                await asyncio.to_thread(scanner.close)  # no prefetch thread outlives the worker
            for lease in [*self.leases.values(), self.sweep_lease, self.rates_lease]:
                await asyncio.to_thread(lease.release)
            self._single.release()
            log.info("worker stopped")

    def preflight(self) -> None:
        """Start-up checks of the adapters that have them (a node without the trace methods that
        ``internal_transfers: trace`` needs raises ConfigError and the worker does not start). A
        node that is merely unreachable now is logged; its scan checks again and fails loudly."""
        for name, scanner in self.scanners.items():
            check = getattr(scanner.adapter, "preflight", None)
            if check is None:
                continue
            try:
                check()
            except RetryableChainError as exc:
                log.warning("start-up check postponed: %s", exc, extra={"network": name})

    def stop(self) -> None:
        self.stopping.set()
