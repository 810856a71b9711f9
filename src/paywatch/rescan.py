"""Admin rescans: a block range or one transaction, through the scanner's own matching and ledger.

A rescan never moves the live cursor and never touches the stored block hashes; payments are
stored idempotently, so running it twice changes nothing the second time. Under ``dry_run`` the
work runs inside one transaction that is rolled back: the report says what would change.

A rescan reads only blocks the scanner has passed (at or below the cursor), and each of them must
be the block the scanner stored for its height: a payment counts only while its block is the
stored canonical one, and nothing above the cursor is checked against reorgs yet. Blocks above
the cursor are the scanner's to record when it reaches them. Each chunk takes the network's
state row lock (PostgreSQL) while it checks and writes, so the scanner cannot roll back under it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from paywatch.addresses import build_watch_index
from paywatch.chains.base import BlockRef, ChainAdapter, ScannedRange
from paywatch.config import NetworkConfig
from paywatch.domain.matching import Match, Unmatched, WatchIndex
from paywatch.errors import ConflictError, InputError, RetryableChainError
from paywatch.ledger import Ledger
from paywatch.scanner import record
from paywatch.store.models import Invoice, NetworkState, Payment, ScannedBlock, UnmatchedTransfer, find_transfer

#: ``progress(blocks_done, blocks_total)``
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PaymentChange:
    """One matched transfer and what recording it does: ``new``, ``moved`` (re-mined) or ``unchanged``."""

    invoice_id: str
    tx_hash: str
    log_index: int
    asset_key: str
    amount: int
    block_number: int
    change: str


@dataclass(frozen=True)
class UnmatchedChange:
    """One transfer for the unmatched inbox: ``new``, ``moved`` or ``unchanged``."""

    tx_hash: str
    log_index: int
    to_address: str
    asset_key: str
    amount: int
    reason: str
    change: str


@dataclass(frozen=True)
class StatusChange:
    """An invoice whose status, flags or paid amount the rescan moves."""

    invoice_id: str
    before: str
    after: str
    flags_before: tuple[str, ...]
    flags_after: tuple[str, ...]
    paid_before: int
    paid_after: int


@dataclass
class RescanReport:
    """What a rescan found and changed (or, under ``dry_run``, would change)."""

    network: str
    start: int
    end: int
    dry_run: bool
    blocks: int = 0
    transfers: int = 0
    payments: list[PaymentChange] = field(default_factory=list)
    unmatched: list[UnmatchedChange] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        changes = [p.change for p in self.payments] + [u.change for u in self.unmatched]
        return bool(self.status_changes) or any(change != "unchanged" for change in changes)


_Before = tuple[str, tuple[str, ...], int]


class _Run:
    """Applies scanned ranges in a session and keeps the report."""

    def __init__(self, network: NetworkConfig, ledger: Ledger, report: RescanReport) -> None:
        self.network = network
        self.ledger = ledger
        self.report = report
        self.before: dict[str, _Before] = {}

    def apply(self, session: Session, index: WatchIndex, scanned: ScannedRange, now: datetime) -> None:
        matches, unmatched = index.match_all(list(scanned.transfers))
        self.report.blocks += len(scanned.blocks)
        self.report.transfers += len(scanned.transfers)
        for match in matches:
            self._note_payment(session, match)
        for item in unmatched:
            self._note_unmatched(session, item)
        record(session, self.ledger, matches, unmatched, now)
        session.flush()

    def finish(self, session: Session) -> None:
        for invoice_id, (status, flags, paid) in sorted(self.before.items()):
            invoice = session.get(Invoice, invoice_id, populate_existing=True)
            assert invoice is not None
            after = (invoice.status, tuple(sorted(invoice.flags)), invoice.amount_paid)
            if after != (status, flags, paid):
                self.report.status_changes.append(
                    StatusChange(invoice_id, status, after[0], flags, after[1], paid, after[2])
                )

    def _note_payment(self, session: Session, match: Match) -> None:
        t = match.transfer
        existing = find_transfer(session, Payment, t)
        change = _change(
            existing is None, existing is not None and (existing.orphaned or existing.block_hash != t.block_hash)
        )
        self.report.payments.append(
            PaymentChange(match.invoice_id, t.tx_hash, t.log_index, t.asset_key, t.amount, t.block_number, change)
        )
        if match.invoice_id not in self.before:
            invoice = session.get(Invoice, match.invoice_id)
            if invoice is not None:
                self.before[invoice.id] = (invoice.status, tuple(sorted(invoice.flags)), invoice.amount_paid)

    def _note_unmatched(self, session: Session, item: Unmatched) -> None:
        t = item.transfer
        existing = find_transfer(session, UnmatchedTransfer, t)
        change = _change(
            existing is None, existing is not None and (existing.orphaned or existing.block_hash != t.block_hash)
        )
        self.report.unmatched.append(
            UnmatchedChange(t.tx_hash, t.log_index, t.to_address, t.asset_key, t.amount, item.reason.value, change)
        )


def _change(new: bool, moved: bool) -> str:
    return "new" if new else "moved" if moved else "unchanged"


def scan_cursor(session: Session, network: str, *, lock: bool = False) -> int:
    """The live scanner's cursor; a network never scanned has nothing a rescan may read."""
    state = session.get(NetworkState, network, with_for_update=lock, populate_existing=True)
    if state is None or state.cursor_height is None:
        raise ConflictError(
            f"{network} has not been scanned yet: a rescan re-reads blocks the scanner has passed", field="network"
        )
    return state.cursor_height


def check_canonical(session: Session, network: str, blocks: tuple[BlockRef, ...], *, lock: bool) -> None:
    """Refuse blocks above the cursor or other than the ones the scanner stored for their heights."""
    cursor = scan_cursor(session, network, lock=lock)
    numbers = [b.number for b in blocks]
    if max(numbers) > cursor:
        raise ConflictError(
            f"block {max(numbers)} is above the scan cursor {cursor}: the scanner records it when it gets there",
            field="tx_hash" if len(blocks) == 1 else "to_block",
        )
    stored = dict(
        session.exec(
            select(ScannedBlock.number, ScannedBlock.hash).where(
                ScannedBlock.network == network, col(ScannedBlock.number).in_(numbers)
            )
        ).all()
    )
    for block in blocks:
        if stored.get(block.number, block.hash) != block.hash:
            raise RetryableChainError(
                f"{network}: block {block.number} changed since the scanner stored it (a reorg it has not "
                "processed yet); run the rescan again after the next scan"
            )


def rescan_range(
    engine: Engine,
    network: NetworkConfig,
    adapter: ChainAdapter,
    ledger: Ledger,
    *,
    start: int,
    end: int | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
) -> RescanReport:
    """Rescan blocks ``start..end`` (default: to the scan cursor) in chunks of ``batch_blocks``.

    Real runs commit chunk by chunk (an interrupted rescan can simply be run again); a dry run
    keeps one transaction and rolls it back.
    """
    tip = adapter.heights().tip
    with Session(engine) as session:
        cursor = scan_cursor(session, network.name)
    end = cursor if end is None else end
    if start > cursor:
        raise InputError(
            f"--from-block {start} is above the scan cursor {cursor}: the scanner records those blocks "
            "when it reaches them",
            field="from_block",
        )
    if start < 0 or end < start:
        raise InputError(f"empty block range {start}..{end}", field="from_block")
    if end > tip:
        raise InputError(f"--to-block {end} is beyond the node's tip {tip}", field="to_block")
    if end > cursor:
        raise InputError(
            f"--to-block {end} is above the scan cursor {cursor}: the scanner records those blocks "
            "when it reaches them",
            field="to_block",
        )
    report = RescanReport(network.name, start, end, dry_run)
    run = _Run(network, ledger, report)
    total = end - start + 1
    chunk = network.batch_blocks
    if progress:
        progress(0, total)
    with Session(engine, expire_on_commit=False) as session:
        try:
            index = build_watch_index(session, network)
            for lo in range(start, end + 1, chunk):
                hi = min(end, lo + chunk - 1)
                scanned = adapter.fetch_range(lo, hi, index.is_watched)
                check_canonical(session, network.name, scanned.blocks, lock=not dry_run)
                run.apply(session, index, scanned, clock())
                if not dry_run:
                    session.commit()
                if progress:
                    progress(hi - start + 1, total)
            run.finish(session)
        finally:
            session.rollback()  # a no-op after the last commit of a real run
    return report


def rescan_transaction(
    engine: Engine,
    network: NetworkConfig,
    adapter: ChainAdapter,
    ledger: Ledger,
    tx_hash: str,
    *,
    dry_run: bool = False,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
) -> RescanReport:
    """Read one transaction and record what it pays, like the scanner would (at or below the cursor)."""
    if progress:
        progress(0, 1)
    with Session(engine, expire_on_commit=False) as session:
        try:
            index = build_watch_index(session, network)
            scanned = adapter.transaction_transfers(tx_hash.strip(), index.is_watched)
            check_canonical(session, network.name, scanned.blocks, lock=not dry_run)
            number = scanned.blocks[0].number
            report = RescanReport(network.name, number, number, dry_run)
            run = _Run(network, ledger, report)
            run.apply(session, index, scanned, clock())
            if not dry_run:
                session.commit()
            run.finish(session)
        finally:
            session.rollback()
    if progress:
        progress(1, 1)
    return report
