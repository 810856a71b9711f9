"""Scan one network, one step at a time: cursor -> range -> fetch -> reorg check -> persist.

Chain-family neutral: everything chain-specific is behind the ChainAdapter. One :meth:`Scanner.step`

1. reads the heights once;
2. picks ``[cursor + 1, min(tip, cursor + batch_blocks)]`` (first start: the tip, or ``start_block``);
3. fetches the range; if its first block's parent is not the stored cursor hash, walks back over
   the stored block hashes to the common ancestor, orphans everything above it (the ledger moves
   the invoices back) and reads the range again;
4. in ONE transaction stores the block hashes, orphans anything recorded at those heights in
   another block (a payment counts only while its block is the stored canonical one), advances
   the cursor (expiry is judged by the scanned blocks' time), stores the payments and unmatched
   transfers and re-evaluates the invoices whose confirmations may have crossed the threshold.

With its background thread (the default), a step reads its range while it builds or checks the
watch index (the read's predicate waits for the index), and starts reading the next range, up to
this step's tip, before it stores its own; the adapter is never used by two threads at once.

A failed read raises; the cursor never passes a block that was not stored. There is no cap on
catch-up: call ``step()`` again while ``StepResult.caught_up`` is False. A step that reaches the
tip of a network whose adapter is a MempoolSource then polls the mempool (paywatch.mempool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from paywatch.addresses import load_watch_index, refresh_watch_index
from paywatch.chains.base import BlockRef, ChainAdapter, MempoolSource, ScannedRange
from paywatch.config import NetworkConfig
from paywatch.domain.matching import Match, Unmatched, WatchIndex
from paywatch.domain.status import TERMINAL, Heights
from paywatch.errors import ChainError, RetryableChainError
from paywatch.ledger import Ledger
from paywatch.mempool import MempoolResult, MempoolWatcher
from paywatch.redact import describe
from paywatch.store.db import insert_rows, read_scope, session_scope
from paywatch.store.models import Invoice, NetworkState, Payment, ScannedBlock
from paywatch.store.watch import WatchMark, read_mark

#: How many recent block hashes are kept per network (reorgs deeper than this stop the scan).
KEEP_BLOCKS = 1024


@dataclass(frozen=True)
class StepResult:
    """What one step did. ``start``/``end`` is the stored range (None when nothing was new)."""

    network: str
    tip: int
    final: int | None
    start: int | None = None
    end: int | None = None
    transfers: int = 0
    matched: int = 0
    unmatched: int = 0
    reorg_depth: int = 0
    touched: frozenset[str] = frozenset()
    caught_up: bool = True
    mempool: MempoolResult | None = None

    @property
    def blocks(self) -> int:
        return 0 if self.start is None or self.end is None else self.end - self.start + 1


@dataclass
class Applied:
    """The result of persisting one scanned range."""

    matches: list[Match] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


def apply_transfers(
    session: Session, ledger: Ledger, index: WatchIndex, scanned: ScannedRange, now: datetime
) -> Applied:
    """Match a range's transfers and record them idempotently (the path shared with rescans)."""
    matches, unmatched = index.match_all(list(scanned.transfers))
    return record(session, ledger, matches, unmatched, now)


def record(
    session: Session, ledger: Ledger, matches: list[Match], unmatched: list[Unmatched], now: datetime
) -> Applied:
    """Store matched payments (re-evaluating their invoices) and the unmatched inbox, idempotently."""
    touched = ledger.record_matches(session, matches, now) if matches else set()
    if unmatched:
        ledger.record_unmatched(session, unmatched, now)
    return Applied(matches, unmatched, touched)


@dataclass(frozen=True)
class _Read:
    """A range being read (or read) in the scanner's background thread."""

    start: int
    end: int
    future: Future[ScannedRange]


class _PendingIndex:
    """The watch predicate of a read started before its step's watch index is ready: a call
    waits for the index, or raises ChainError when building it failed (the step then fails
    with the build's own error and the read is discarded)."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._index: WatchIndex | None = None

    def resolve(self, index: WatchIndex) -> None:
        self._index = index
        self._ready.set()

    def fail(self) -> None:
        self._ready.set()

    def __call__(self, address: str) -> bool:
        self._ready.wait()
        if self._index is None:
            raise ChainError("the watch index of this step could not be built")
        return self._index.is_watched(address)


class WatchIndexCache:
    """The network's WatchIndex, kept current from the watch stamps (paywatch.store.watch).

    Every :meth:`get` reads the network's :class:`WatchMark` (two primary-key rows, and on
    PostgreSQL the current snapshot). When it moved, the invoices stamped since the mark seen
    before are read and added (an index scan: a handful of rows, often none; on PostgreSQL every
    commit in the cluster moves it); when the network's counter moved, its store addresses are read again; when the
    every-network counter moved (a store's late window), or on the first call, the index is built
    afresh. All reads run in read-only transactions of their own, one per page of a build: a build
    never holds a lock, and on SQLite takes no write lock. The mark is read before the invoices, so
    a change committed during a build is read again by the next call, never missed.
    """

    def __init__(self, network: NetworkConfig, engine: Engine) -> None:
        self._network = network
        self._engine = engine
        self._index: WatchIndex | None = None
        self._mark: WatchMark | None = None
        self.builds = 0
        self.refreshes = 0
        """Refreshes that read something (invoices or store addresses)."""

    def get(self) -> WatchIndex:
        with read_scope(self._engine) as session:
            mark = read_mark(session, self._network.name)
            seen = self._mark
            if self._index is not None and seen is not None and mark.every == seen.every:
                read = refresh_watch_index(
                    session,
                    self._index,
                    self._network,
                    since=seen if (mark.horizon, mark.pending) != (seen.horizon, seen.pending) else None,
                    addresses=mark.network != seen.network,
                )
                self._mark = mark
                self.refreshes += 1 if read else 0
        if self._index is None or mark != self._mark:
            self._index = load_watch_index(lambda: read_scope(self._engine), self._network)
            self._mark = mark
            self.builds += 1
        return self._index


class Scanner:
    """Scans one network into the database; see the module docstring for one step's contract."""

    def __init__(
        self,
        network: NetworkConfig,
        adapter: ChainAdapter,
        engine: Engine,
        ledger: Ledger,
        clock: Callable[[], datetime],
        *,
        prefetch: bool = True,
    ) -> None:
        self.network = network
        self.adapter = adapter
        self.engine = engine
        self.ledger = ledger
        self.clock = clock
        self.watch = WatchIndexCache(network, engine)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"scan-{network.name}") if prefetch else None
        self._prefetched: _Read | None = None
        self.mempool: MempoolWatcher | None = None
        if network.mempool and isinstance(adapter, MempoolSource):
            self.mempool = MempoolWatcher(network, adapter, engine, ledger)

    def close(self) -> None:
        """Stop the prefetch thread (waits for a fetch in flight)."""
        self._prefetched = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # --- one step --------------------------------------------------------------------------------

    def step(self) -> StepResult:
        """One poll: read heights, scan at most ``batch_blocks`` new blocks, persist them."""
        now = self.clock()
        heights: Heights | None = None
        if self._prefetched is not None:
            wait([self._prefetched.future])  # the adapter is never used by two threads at once
        try:
            heights = self.adapter.heights()
            return self._step(heights, now)
        except Exception as exc:
            self._record_error(heights, now, exc)
            raise

    def run_until_caught_up(self, max_steps: int = 1_000_000) -> list[StepResult]:
        """Step until the cursor reaches the tip (bounded by ``max_steps``)."""
        results = []
        for _ in range(max_steps):
            result = self.step()
            results.append(result)
            if result.caught_up:
                break
        return results

    def _step(self, heights: Heights, now: datetime) -> StepResult:
        name = self.network.name
        with session_scope(self.engine) as session:
            state = session.get(NetworkState, name)
            cursor = state.cursor_height if state else None
            cursor_hash = state.cursor_hash if state else None
            floor = lowest_open_height(session, name) if cursor is None else None
        if cursor is None:
            start = self.network.start_block if self.network.start_block is not None else heights.tip
            start = start if floor is None else min(start, floor)  # never above an open invoice's creation
        else:
            start = cursor + 1
        pending = self._read_early(start, min(heights.tip, start + self.network.batch_blocks - 1))
        try:
            index = self.watch.get()
        except BaseException:
            if pending is not None:
                pending.fail()
            raise
        if pending is not None:
            pending.resolve(index)
        if start > heights.tip:
            with session_scope(self.engine) as session:
                self._save_heights(session, heights, now, None)
                self.ledger.refresh_confirmations(session, name, now)
            return StepResult(name, heights.tip, heights.final, mempool=self._poll_mempool(now))
        end = min(heights.tip, start + self.network.batch_blocks - 1)
        scanned, end = self._fetch(start, end, index)
        _check_range(scanned.blocks, start, end)
        reorg_depth = 0
        if cursor is not None and cursor_hash is not None and scanned.blocks[0].parent_hash != cursor_hash:
            ancestor, ancestor_hash = self._common_ancestor(cursor)
            reorg_depth = cursor - ancestor
            with session_scope(self.engine) as session:
                self._move_cursor(session, cursor, ancestor, ancestor_hash)  # first: the state row lock orders writers
                self.ledger.orphan_from(session, name, ancestor + 1, now)
                session.exec(
                    delete(ScannedBlock).where(col(ScannedBlock.network) == name, col(ScannedBlock.number) > ancestor)
                )
            cursor, cursor_hash, start = ancestor, ancestor_hash, ancestor + 1
            end = min(heights.tip, start + self.network.batch_blocks - 1)
            scanned = self.adapter.fetch_range(start, end, index.is_watched)
            _check_range(scanned.blocks, start, end)
            if cursor_hash is not None and scanned.blocks[0].parent_hash != cursor_hash:
                raise RetryableChainError(f"{name}: the chain is still reorganising at block {start}")
        if end < heights.tip:
            self._prefetch(end + 1, min(heights.tip, end + self.network.batch_blocks), index)
        with session_scope(self.engine) as session:
            self._save_heights(session, heights, now, scanned.blocks[-1] if end == heights.tip else None)
            session.exec(
                delete(ScannedBlock).where(col(ScannedBlock.network) == name, col(ScannedBlock.number) >= start)
            )
            insert_rows(
                session,
                ScannedBlock,
                [
                    {
                        "network": name,
                        "number": r.number,
                        "hash": r.hash,
                        "parent_hash": r.parent_hash,
                        "timestamp": r.timestamp,
                    }
                    for r in scanned.blocks
                ],
            )
            self.ledger.orphan_replaced(session, name, {r.number: r.hash for r in scanned.blocks}, now)
            last = scanned.blocks[-1]
            self._move_cursor(session, cursor, end, last.hash, last.timestamp)  # first: expiry sees this range
            applied = apply_transfers(session, self.ledger, index, scanned, now)
            session.exec(
                delete(ScannedBlock).where(
                    col(ScannedBlock.network) == name, col(ScannedBlock.number) <= end - KEEP_BLOCKS
                )
            )
            session.flush()
            self.ledger.refresh_confirmations(session, name, now)
        return StepResult(
            network=name,
            tip=heights.tip,
            final=heights.final,
            start=start,
            end=end,
            transfers=len(scanned.transfers),
            matched=len(applied.matches),
            unmatched=len(applied.unmatched),
            reorg_depth=reorg_depth,
            touched=frozenset(applied.touched),
            caught_up=end >= heights.tip,
            mempool=self._poll_mempool(now) if end >= heights.tip else None,
        )

    def _read_early(self, start: int, end: int) -> _PendingIndex | None:
        """Start reading this step's range while its watch index is being built (or checked).

        Only with a prefetch thread, and unless the step before already read a range starting at
        ``start`` (a failed read is read again). The read's watch predicate waits for the index:
        the block bodies, most of the time, are read before it is first asked.
        """
        if self._pool is None or start > end:
            return None
        ahead = self._prefetched  # done: step() waited for it
        if ahead is not None and ahead.start == start and ahead.end <= end and ahead.future.exception() is None:
            return None
        pending = _PendingIndex()
        self._prefetched = _Read(start, end, self._pool.submit(self.adapter.fetch_range, start, end, pending))
        return pending

    def _prefetch(self, start: int, end: int, index: WatchIndex) -> None:
        """Start reading ``start..end`` in the background while this step stores its range.

        Called once this step is done with the adapter (the reorg checks are behind it), so the
        adapter is still never used by two threads at once. Only blocks <= this step's tip: they
        were mined before this step built its watch index, so no invoice they pay is missing from
        it. The next step uses the read only if it starts at ``start``; the cursor moves only when
        this step's range is stored, so a failed store leaves the read unused.
        """
        if self._pool is not None:
            future = self._pool.submit(self.adapter.fetch_range, start, end, index.is_watched)
            self._prefetched = _Read(start, end, future)

    def _fetch(self, start: int, end: int, index: WatchIndex) -> tuple[ScannedRange, int]:
        """The range from the background read when it starts at ``start`` (a prefetch may end
        earlier; its failure is this step's, as :meth:`_read_early` replaced a failed prefetch),
        else read now."""
        pending, self._prefetched = self._prefetched, None
        if pending is not None and pending.start == start and pending.end <= end:
            return pending.future.result(), pending.end
        return self.adapter.fetch_range(start, end, index.is_watched), end

    def _poll_mempool(self, now: datetime) -> MempoolResult | None:
        """Mempool sightings, matched against a fresh watch index (invoices made during the step)."""
        if self.mempool is None:
            return None
        return self.mempool.poll(self.watch.get(), now)

    # --- reorgs ----------------------------------------------------------------------------------

    def _common_ancestor(self, cursor: int) -> tuple[int, str | None]:
        """The highest stored block that is still canonical, walking back from the cursor."""
        with session_scope(self.engine) as session:
            stored = list(
                session.exec(
                    select(ScannedBlock.number, ScannedBlock.hash)
                    .where(ScannedBlock.network == self.network.name, col(ScannedBlock.number) <= cursor)
                    .order_by(col(ScannedBlock.number).desc())
                )
            )
        for number, stored_hash in stored:
            if self.adapter.block_ref(number).hash == stored_hash:
                return number, stored_hash
        if stored and len(stored) < KEEP_BLOCKS and stored[-1][0] == stored[0][0] - len(stored) + 1:
            # Every block since the first scanned one was replaced: rescan all of them.
            return stored[-1][0] - 1, None
        raise ChainError(
            f"{self.network.name}: reorg deeper than the {len(stored)} stored block hashes; "
            "rescan the affected range with `paywatch rescan`"
        )

    # --- state -----------------------------------------------------------------------------------

    def _move_cursor(
        self,
        session: Session,
        expected: int | None,
        height: int,
        block_hash: str | None,
        block_time: datetime | None = None,
    ) -> None:
        state = session.get(NetworkState, self.network.name, with_for_update=True)
        if state is None:
            state = NetworkState(network=self.network.name)
        elif state.cursor_height != expected:
            raise ChainError(
                f"{self.network.name}: the cursor moved from {expected} to {state.cursor_height} "
                "during the step (two scanners on one network?)"
            )
        state.cursor_height = height
        state.cursor_hash = block_hash
        if block_time is not None and (state.clock_high is None or block_time > state.clock_high):
            state.clock_high = block_time  # a reorg moves the cursor back, never the chain clock
        session.add(state)

    def _save_heights(self, session: Session, heights: Heights, now: datetime, tip_block: BlockRef | None) -> None:
        state = session.get(NetworkState, self.network.name) or NetworkState(network=self.network.name)
        state.tip_height = heights.tip
        state.final_height = heights.final
        if tip_block is not None:
            state.tip_time = tip_block.timestamp
        state.last_scan_at = now
        state.last_error = None
        session.add(state)
        session.flush()

    def _record_error(self, heights: Heights | None, now: datetime, exc: BaseException) -> None:
        try:
            with session_scope(self.engine) as session:
                state = session.get(NetworkState, self.network.name) or NetworkState(network=self.network.name)
                if heights is not None:
                    state.tip_height = heights.tip
                    state.final_height = heights.final
                state.last_scan_at = now
                state.last_error = describe(exc)[:1000]
                session.add(state)
        except Exception:  # the original error matters more than a failed bookkeeping write
            return


def _check_range(blocks: Iterable[BlockRef], start: int, end: int) -> None:
    refs = list(blocks)
    if [b.number for b in refs] != list(range(start, end + 1)):
        raise ChainError(f"adapter returned blocks {[b.number for b in refs][:5]}... for {start}..{end}")
    for parent, child in pairwise(refs):
        if child.parent_hash != parent.hash:
            raise RetryableChainError(f"block {child.number} does not extend block {parent.number}; retrying")


def lowest_open_height(session: Session, network: str) -> int | None:
    """The lowest chain height recorded at creation among ``network``'s invoices not yet final
    (COMPLETED or CANCELLED): a first scan starting above it could miss their payments."""
    final = [status.value for status in TERMINAL]
    stmt = select(func.min(Invoice.created_height)).where(
        col(Invoice.network) == network, col(Invoice.status).not_in(final)
    )
    lowest = session.exec(stmt).one()
    return None if lowest is None else int(lowest)


def stored_payments(session: Session, network: str, start: int, end: int) -> list[Payment]:
    """Payments of ``network`` in blocks ``start..end`` (used by reports and tests)."""
    return list(
        session.exec(
            select(Payment).where(
                Payment.network == network, col(Payment.block_number) >= start, col(Payment.block_number) <= end
            )
        )
    )
