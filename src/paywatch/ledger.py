"""Every change to money state goes through here, inside the caller's transaction.

Each change runs ``evaluate()``, appends to the status history when status or flags move, and
writes the callback events to the outbox, all in the same transaction as the change itself.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import union
from sqlmodel import Session, col, select, update

from paywatch.checkout.models import AttemptChange
from paywatch.config import NetworkConfig
from paywatch.domain.events import UPDATED, change_events
from paywatch.domain.matching import Match, Unmatched, UnmatchedReason
from paywatch.domain.status import OPEN, TERMINAL, Heights, InvoiceStatus, evaluate
from paywatch.domain.transfer import Transfer
from paywatch.errors import NotFoundError
from paywatch.metrics import TRANSITIONS
from paywatch.outbox import emit, event_rows, insert_events
from paywatch.policy import chain_clock, invoice_facts, payment_facts, store_policy, stored_heights
from paywatch.store.db import insert_rows
from paywatch.store.models import (
    Invoice,
    Payment,
    StatusHistory,
    Store,
    TransferKey,
    UnmatchedTransfer,
    find_transfer,
    find_transfers,
    insert_new,
    maturing_payment,
    transfer_columns,
    transfer_key,
    unconfirmed,
)
from paywatch.views import HistoryEntry, invoice_view

log = logging.getLogger(__name__)
_LOCK_CHUNK = 500  # invoices locked per query


@dataclass(frozen=True, slots=True)
class _Entry:
    """A status history row about to be inserted, as the invoice JSON shows it."""

    status: str
    at: datetime
    reason: str


class _Reading:
    """What re-evaluating invoices reads besides the invoice rows, read once for many of them:
    their payments and status history (each in id order), and per network the stored heights and
    the chain clock. Taken after the payments changed. The history and outbox rows the
    re-evaluations add are collected here and inserted by :meth:`write`, each table in one statement."""

    def __init__(self, session: Session, invoice_ids: list[str], now: datetime) -> None:
        self._session = session
        self._now = now
        self.payments: dict[str, list[Payment]] = defaultdict(list)
        self.history: dict[str, list[HistoryEntry]] = defaultdict(list)
        self.new_history: list[dict[str, Any]] = []
        self.new_events: list[dict[str, Any]] = []
        for i in range(0, len(invoice_ids), _LOCK_CHUNK):
            chunk = invoice_ids[i : i + _LOCK_CHUNK]
            payments = select(Payment).where(col(Payment.invoice_id).in_(chunk)).order_by(col(Payment.id))
            for payment in session.exec(payments):
                self.payments[payment.invoice_id].append(payment)
            history = select(StatusHistory).where(col(StatusHistory.invoice_id).in_(chunk))
            for row in session.exec(history.order_by(col(StatusHistory.id))):
                self.history[row.invoice_id].append(row)
        self._heights: dict[tuple[str, bool], Heights] = {}
        self._clocks: dict[str, datetime] = {}
        self._stores: dict[str, Store] = {}  # held here: the session's identity map keeps no row alive

    def store(self, store_id: str) -> Store:
        if store_id not in self._stores:
            store = self._session.get(Store, store_id)
            assert store is not None
            self._stores[store_id] = store
        return self._stores[store_id]

    def heights(self, network: str, *, uses_finality: bool) -> Heights:
        key = (network, uses_finality)
        if key not in self._heights:
            self._heights[key] = stored_heights(self._session, network, uses_finality=uses_finality)
        return self._heights[key]

    def write(self) -> None:
        """Insert the history and outbox rows collected so far, in the order they were added."""
        insert_rows(self._session, StatusHistory, self.new_history)
        insert_events(self._session, self.new_events)
        self.new_history, self.new_events = [], []

    def clock(self, network: str) -> datetime:
        if network not in self._clocks:
            self._clocks[network] = chain_clock(self._session, network, self._now)
        return self._clocks[network]


def _waits_in_inbox(row: UnmatchedTransfer | None, transfer: Transfer) -> bool:
    """Whether ``transfer`` already waits in the unmatched inbox (``row``), in the block it is seen in.

    Money never leaves the inbox by itself: a transfer put there stays until an admin attaches
    it, even if matching would now attribute it (to an invoice created later, which may be
    another customer's, or after a policy change). A re-mined transfer is decided afresh.
    """
    return (
        row is not None
        and row.attached_invoice_id is None
        and not row.orphaned
        and row.block_hash == transfer.block_hash
    )


class Ledger:
    """Records payments and re-evaluates invoices for a set of configured networks."""

    def __init__(self, networks: dict[str, NetworkConfig]) -> None:
        self.networks = networks

    # --- evaluation -------------------------------------------------------------------------

    def reevaluate(
        self,
        session: Session,
        invoice: Invoice,
        now: datetime,
        *,
        reason: str,
        new_payments_late: Iterable[bool] = (),
        reverted: int = 0,
        restored: int = 0,
        extra_events: Iterable[str] = (),
        reading: _Reading | None = None,
    ) -> bool:
        """Evaluate one invoice and persist what changed; True if anything did.

        ``reading``: what :meth:`reevaluate_all` loaded once for many invoices (this one among them).
        """
        network = self.networks[invoice.network]
        if reading is None:
            reading = _Reading(session, [invoice.id], now)
            changed = self.reevaluate(
                session,
                invoice,
                now,
                reason=reason,
                new_payments_late=new_payments_late,
                reverted=reverted,
                restored=restored,
                extra_events=extra_events,
                reading=reading,
            )
            reading.write()
            return changed
        store = reading.store(invoice.store_id)
        payments = reading.payments[invoice.id]
        heights = reading.heights(invoice.network, uses_finality=network.finality is not None)
        decision = evaluate(
            invoice_facts(invoice),
            [payment_facts(p) for p in payments],
            reading.clock(invoice.network),  # expiry by scanned block time, not the wall clock
            heights,
            store_policy(store),
        )
        before = InvoiceStatus(invoice.status)
        events = [
            *extra_events,
            *change_events(
                before, decision.status, new_payments_late=new_payments_late, reverted=reverted, restored=restored
            ),
        ]
        flags = sorted(decision.flags)
        moved = decision.status != before or flags != sorted(invoice.flags)
        sums_changed = (invoice.amount_paid, invoice.amount_confirmed) != (decision.seen, decision.confirmed)
        if not (moved or sums_changed or events):
            return False
        if moved and not events:
            events = [UPDATED]  # every new status_version reaches the merchant as an event
        invoice.status = decision.status.value
        invoice.flags = flags
        invoice.amount_paid = decision.seen
        invoice.amount_confirmed = decision.confirmed
        invoice.updated_at = now
        session.add(invoice)
        if decision.status != before:
            TRANSITIONS.labels(decision.status.value).inc()
            log.info(
                "invoice %s: %s -> %s (%s)",
                invoice.id,
                before.value,
                decision.status.value,
                reason,
                extra={"invoice_id": invoice.id, "network": invoice.network},
            )
        history = reading.history[invoice.id]
        if moved:
            why = (reason if decision.status == before else f"{reason}: {decision.reason}")[:200]
            reading.new_history.append(
                {
                    "invoice_id": invoice.id,
                    "status": invoice.status,
                    "status_version": invoice.status_version + len(events),
                    "flags": flags,
                    "reason": why,
                    "at": now,
                }
            )
            history.append(_Entry(invoice.status, now, why))
        view = invoice_view(invoice, payments, history, heights, network)
        reading.new_events += event_rows(invoice, events, now, view)
        session.add(invoice)
        AttemptChange.note(session, invoice, now)  # a payment attempt's fiat invoice follows
        return True

    def reevaluate_all(
        self,
        session: Session,
        invoice_ids: Iterable[str],
        now: datetime,
        *,
        reason: str,
        new_payments_late: Mapping[str, list[bool]] | None = None,
        reverted: Mapping[str, int] | None = None,
        restored: Mapping[str, int] | None = None,
        locked: Mapping[str, Invoice] | None = None,
    ) -> int:
        """Lock (one query, in id order) and re-evaluate many invoices, each once, reading their
        payments, history, heights and chain clock once for all; return how many changed.

        ``locked``: invoices the caller already locked in this transaction (:meth:`_lock_all`),
        not read again; only the others are locked here."""
        ids = sorted(set(invoice_ids))
        if not ids:
            return 0
        held = locked or {}
        invoices = {i: held[i] for i in ids if i in held}
        invoices.update(self._lock_all(session, [i for i in ids if i not in held]))
        missing = [i for i in ids if i not in invoices]
        if missing:
            raise NotFoundError(f"no invoice {missing[0]!r}", field="id")
        reading = _Reading(session, ids, now)
        changed = 0
        for invoice_id in ids:
            changed += self.reevaluate(
                session,
                invoices[invoice_id],
                now,
                reason=reason,
                new_payments_late=(new_payments_late or {}).get(invoice_id, ()),
                reverted=(reverted or {}).get(invoice_id, 0),
                restored=(restored or {}).get(invoice_id, 0),
                reading=reading,
            )
        reading.write()
        return changed

    def set_status(
        self,
        session: Session,
        invoice: Invoice,
        status: InvoiceStatus,
        now: datetime,
        *,
        reason: str,
        flag: str | None = None,
    ) -> None:
        """A manual terminal move (cancel, mark-paid): history and outbox like any other change.

        ``invoice`` must come from :meth:`lock_invoice` in this transaction. A unique amount stays
        reserved (``open_amount``) until the late window has passed, whatever the status: see
        :meth:`_release_amounts`.
        """
        invoice.status = status.value
        TRANSITIONS.labels(status.value).inc()
        if flag and flag not in invoice.flags:
            invoice.flags = sorted([*invoice.flags, flag])
        invoice.updated_at = now
        session.add(
            StatusHistory(
                invoice_id=invoice.id,
                status=status.value,
                status_version=invoice.status_version + 1,
                flags=list(invoice.flags),
                reason=reason[:200],
                at=now,
            )
        )
        event = "invoice.cancelled" if status is InvoiceStatus.CANCELLED else "invoice.completed"
        emit(session, invoice, [event], now, self.networks[invoice.network])
        AttemptChange.note(session, invoice, now)

    # --- payments from scanners ------------------------------------------------------------------

    def record_matches(self, session: Session, matches: Iterable[Match], now: datetime) -> set[str]:
        """Store matched transfers idempotently and re-evaluate their invoices; return those touched.

        Every invoice the batch can touch (the matched ones and the owners of re-mined payments) is
        locked first, in id order, so a concurrent cancel or mark-paid is decided either wholly
        before or wholly after these credits. A transfer for a CANCELLED invoice is not credited:
        it goes to the unmatched inbox as ``invoice_cancelled``, where it can be attached elsewhere.
        The whole batch costs a fixed number of queries, whatever its size: existing payments,
        the locks, the inbox, one insert of the new payments, one reading for the re-evaluations.
        """
        matches = list(matches)
        if not matches:
            return set()
        existing = find_transfers(session, Payment, [match.transfer for match in matches])
        wanted = {m.invoice_id for m in matches} | {p.invoice_id for p in existing.values()}
        locked = self._lock_all(session, sorted(wanted))
        inbox = find_transfers(
            session, UnmatchedTransfer, [m.transfer for m in matches if transfer_key(m.transfer) not in existing]
        )
        credits: list[tuple[Invoice, Transfer]] = []
        cancelled: list[Unmatched] = []
        for match in matches:
            invoice = locked.get(match.invoice_id)
            if invoice is None:
                continue
            key = transfer_key(match.transfer)
            payment = existing.get(key)
            if payment is None and _waits_in_inbox(inbox.get(key), match.transfer):
                continue  # read again (a rescan after a policy change, say): the inbox decision stands
            owner = invoice if payment is None else locked[payment.invoice_id]
            if owner.status == InvoiceStatus.CANCELLED.value and (payment is None or payment.orphaned):
                cancelled.append(Unmatched(match.transfer, UnmatchedReason.INVOICE_CANCELLED, owner.id))
                continue
            credits.append((invoice, match.transfer))
        touched = self._credit(session, credits, now, known=existing, locked=locked)
        if cancelled:
            self.record_unmatched(session, cancelled, now)
        return touched

    def _credit(
        self,
        session: Session,
        credits: Iterable[tuple[Invoice, Transfer]],
        now: datetime,
        *,
        known: Mapping[TransferKey, Payment] | None = None,
        locked: Mapping[str, Invoice] | None = None,
    ) -> set[str]:
        """Store each (invoice, transfer) payment, then re-evaluate every invoice that changed once.

        New payments are inserted in one statement that skips any another writer stored first;
        those, and every transfer already stored, go through :meth:`_update_payment`. ``known``:
        the stored payments of (at least) these transfers, when the caller read them in this
        transaction; ``locked``: as for :meth:`reevaluate_all`.
        """
        credits = list(credits)
        found = dict(known) if known is not None else find_transfers(session, Payment, [t for _, t in credits])
        inserted = self._insert_payments(session, credits, found, now)
        late_by_invoice: dict[str, list[bool]] = defaultdict(list)
        restored: dict[str, int] = defaultdict(int)
        touched: set[str] = set()
        for position, (invoice, transfer) in enumerate(credits):
            key = transfer_key(transfer)
            if inserted.get(key) == position:
                touched.add(invoice.id)
                late_by_invoice[invoice.id].append(transfer.block_time > invoice.expires_at)
                log.info(
                    "payment of %d %s to invoice %s in block %d",
                    transfer.amount,
                    transfer.asset_key,
                    invoice.id,
                    transfer.block_number,
                    extra={
                        "invoice_id": invoice.id,
                        "network": transfer.network,
                        "tx_hash": transfer.tx_hash,
                        "block": transfer.block_number,
                    },
                )
                continue
            existing = found.get(key)
            if existing is None:  # stored just now: earlier in this batch, or by another writer
                existing = self._payment(session, transfer)
            if existing is None:
                raise AssertionError(f"payment {key} was neither inserted nor found")
            found[key] = existing
            stored = self._update_payment(session, invoice, existing, transfer, now)
            if stored is None:
                continue
            owner_id, change = stored
            touched.add(owner_id)
            if change == "restored":
                restored[owner_id] += 1
        self.reevaluate_all(
            session,
            touched,
            now,
            reason="payment",
            new_payments_late=late_by_invoice,
            restored=restored,
            locked=locked,
        )
        return touched

    @staticmethod
    def _insert_payments(
        session: Session,
        credits: list[tuple[Invoice, Transfer]],
        found: Mapping[TransferKey, Payment],
        now: datetime,
    ) -> dict[TransferKey, int]:
        """Insert the payments of the credits not stored yet (the first credit of each transfer), in
        one statement that leaves out any another writer stored meanwhile; return the keys inserted,
        each with the position of its credit in ``credits``."""
        first: dict[TransferKey, int] = {}
        rows: list[dict[str, Any]] = []
        for position, (invoice, transfer) in enumerate(credits):
            key = transfer_key(transfer)
            if key in found or key in first:
                continue
            first[key] = position
            rows.append(
                {
                    **transfer_columns(transfer),
                    "invoice_id": invoice.id,
                    "success": transfer.success,
                    "orphaned": False,
                    "late": transfer.block_time > invoice.expires_at,
                    "admitted": False,
                    "mempool": transfer.mempool,
                    "replaceable": transfer.replaceable,
                    "maturity": transfer.maturity,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        stored = insert_new(session, Payment, rows)
        return {key: position for key, position in first.items() if key in stored}

    def _update_payment(
        self, session: Session, invoice: Invoice, existing: Payment, transfer: Transfer, now: datetime
    ) -> tuple[str, str] | None:
        """A transfer already stored: (invoice, change) or None when nothing changed. ``change`` is
        ``restored`` (an orphaned payment re-mined) or ``moved`` (seen in another block without
        having been orphaned).

        A re-mined transfer keeps the payment row it already has (same transaction and position
        in it), so the invoice to re-evaluate is that row's owner, even if matching now points
        elsewhere.
        """
        if not existing.orphaned and (transfer.mempool or existing.block_hash == transfer.block_hash):
            return None  # known; a mempool sighting never undoes a block
        if existing.invoice_id != invoice.id:
            owner = session.get(Invoice, existing.invoice_id)
            assert owner is not None
            invoice = owner
        # back in a block restores an orphaned payment; back in a mempool only is not restored yet
        change = "restored" if existing.orphaned and not transfer.mempool else "moved"
        existing.orphaned = False
        existing.log_index = transfer.log_index
        existing.block_number = transfer.block_number
        existing.block_hash = transfer.block_hash
        existing.block_time = transfer.block_time
        existing.late = transfer.block_time > invoice.expires_at
        existing.mempool = transfer.mempool
        existing.replaceable = transfer.replaceable
        existing.updated_at = now
        session.add(existing)
        self._follow_in_inbox(session, transfer)
        return existing.invoice_id, change

    @staticmethod
    def _follow_in_inbox(session: Session, transfer: Transfer) -> None:
        """An attached transfer's inbox row follows its payment to the block it was re-mined in."""
        row = find_transfer(session, UnmatchedTransfer, transfer)
        if row is not None and row.attached_invoice_id is not None:
            row.orphaned = False
            row.log_index = transfer.log_index
            row.block_number, row.block_hash, row.block_time = (
                transfer.block_number,
                transfer.block_hash,
                transfer.block_time,
            )
            session.add(row)

    @staticmethod
    def _payment(session: Session, transfer: Transfer) -> Payment | None:
        return find_transfer(session, Payment, transfer)

    @staticmethod
    def lock_invoice(session: Session, invoice_id: str) -> Invoice:
        """The invoice row, locked for update until the transaction ends (PostgreSQL).

        This is the one way into a change of an invoice: credits, reorgs, confirmations, expiry,
        cancel and mark-paid take this lock first, then decide on what they read here.
        ``populate_existing``: an invoice this session loaded before taking the lock is re-read, so
        a change another transaction committed while we waited is neither missed nor overwritten.
        (SQLite serialises writers with BEGIN IMMEDIATE, so there the lock is implicit.)
        """
        invoice = Ledger._lock_if_exists(session, invoice_id)
        if invoice is None:
            raise NotFoundError(f"no invoice {invoice_id!r}", field="id")
        return invoice

    @staticmethod
    def _lock_if_exists(session: Session, invoice_id: str) -> Invoice | None:
        stmt = (
            select(Invoice).where(Invoice.id == invoice_id).with_for_update().execution_options(populate_existing=True)
        )
        return session.exec(stmt).first()

    @staticmethod
    def _lock_all(session: Session, invoice_ids: Iterable[str]) -> dict[str, Invoice]:
        """The invoices that exist among ``invoice_ids``, each locked for update (as
        :meth:`lock_invoice`), in id order: one query per 500 ids, taken in ascending order."""
        ids = sorted(set(invoice_ids))
        locked: dict[str, Invoice] = {}
        for i in range(0, len(ids), _LOCK_CHUNK):
            stmt = (
                select(Invoice)
                .where(col(Invoice.id).in_(ids[i : i + _LOCK_CHUNK]))
                .order_by(col(Invoice.id))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            locked.update((invoice.id, invoice) for invoice in session.exec(stmt))
        return locked

    def record_unmatched(self, session: Session, items: Iterable[Unmatched], now: datetime) -> int:
        """Put unattributed transfers in the inbox, idempotently; return how many were new or revived.

        A transfer an admin attached to an invoice stays credited to it: when it is re-mined after
        a reorg, its payment is restored (and its invoice re-evaluated) along with its inbox row.
        So does any transfer already credited to an invoice that matching no longer attributes (read
        again by a rescan after its unique amount was released, or re-mined past the late window):
        it is the same transfer, so it goes back to its invoice (flagged late if it now is), never to
        the inbox with its credit lost. Only a payment of a CANCELLED invoice leaves for the inbox.
        """
        items = list(items)
        transfers = [item.transfer for item in items]
        rows = find_transfers(session, UnmatchedTransfer, transfers)
        payments = find_transfers(session, Payment, transfers)
        count = 0
        attached: list[tuple[Invoice, Transfer]] = []
        for item in items:
            t = item.transfer
            key = transfer_key(t)
            row = rows.get(key)
            credited = payments.get(key) if row is None or row.attached_invoice_id is None else None
            if credited is not None and item.reason is not UnmatchedReason.INVOICE_CANCELLED:
                owner = session.get(Invoice, credited.invoice_id)
                if owner is not None:
                    attached.append((owner, t))
                    continue
            if row is not None and row.attached_invoice_id is not None:
                payment = payments.get(key)
                owner = session.get(Invoice, payment.invoice_id) if payment is not None else None
                if owner is not None:
                    attached.append((owner, t))
            if row is None:
                row = rows[key] = UnmatchedTransfer(
                    **transfer_columns(t),
                    reason=item.reason.value,
                    hint_invoice_id=item.invoice_id,
                    created_at=now,
                )
            elif not row.orphaned and row.block_hash == t.block_hash:
                continue
            else:
                row.orphaned = False
                row.log_index = t.log_index
                row.block_number, row.block_hash, row.block_time = t.block_number, t.block_hash, t.block_time
            session.add(row)
            log.info(
                "unmatched transfer of %d %s to %s (%s)",
                t.amount,
                t.asset_key,
                t.to_address,
                item.reason.value,
                extra={"network": t.network, "tx_hash": t.tx_hash, "block": t.block_number},
            )
            count += 1
        if attached:
            self._credit(session, attached, now)
        return count

    # --- reorgs, confirmations, expiry ------------------------------------------------------------

    def orphan_from(self, session: Session, network: str, height: int, now: datetime) -> set[str]:
        """Mark everything credited at or above ``height`` as orphaned and re-evaluate its invoices."""
        orphaned = list(
            session.exec(
                select(Payment).where(
                    Payment.network == network, Payment.block_number >= height, col(Payment.orphaned).is_(False)
                )
            )
        )
        session.exec(
            update(UnmatchedTransfer)
            .where(col(UnmatchedTransfer.network) == network, col(UnmatchedTransfer.block_number) >= height)
            .values(orphaned=True)
        )
        return self._orphan(session, orphaned, now)

    def orphan_replaced(self, session: Session, network: str, canonical: Mapping[int, str], now: datetime) -> set[str]:
        """Orphan what was recorded at these heights in another block than the canonical one.

        ``canonical`` maps heights to the hashes the scanner is storing. A payment counts only
        while its block is the one stored for its height: one recorded ahead of the scanner (by a
        rescan of an earlier version) whose block a reorg then replaced is caught here.
        """
        if not canonical:
            return set()
        low, high = min(canonical), max(canonical)

        def stale(model: type[Payment] | type[UnmatchedTransfer]) -> Any:
            rows = session.exec(
                select(model).where(
                    col(model.network) == network,
                    col(model.block_number) >= low,
                    col(model.block_number) <= high,
                    col(model.orphaned).is_(False),
                )
            )
            return [row for row in rows if canonical.get(row.block_number, row.block_hash) != row.block_hash]

        for row in stale(UnmatchedTransfer):
            row.orphaned = True
            session.add(row)
        return self._orphan(session, stale(Payment), now)

    def _orphan(self, session: Session, payments: Iterable[Payment], now: datetime) -> set[str]:
        per_invoice: dict[str, int] = defaultdict(int)
        for payment in payments:
            payment.orphaned = True
            payment.updated_at = now
            session.add(payment)
            per_invoice[payment.invoice_id] += 1
        session.flush()
        self.reevaluate_all(session, per_invoice, now, reason="reorg", reverted=per_invoice)
        return set(per_invoice)

    def drop_from_mempool(self, session: Session, network: str, in_pool: Set[str], now: datetime) -> set[str]:
        """Mark mempool payments whose transaction left the pool unmined (replaced, double-spent,
        evicted) as orphaned and re-evaluate their invoices (``payment_reverted``).

        Call only when the node's best block is the scanned one, so that a transaction that just
        left the pool for a new block is not taken for a dropped one.
        """
        pooled = session.exec(
            select(Payment).where(
                Payment.network == network, col(Payment.mempool).is_(True), col(Payment.orphaned).is_(False)
            )
        ).all()
        per_invoice: dict[str, int] = defaultdict(int)
        for payment in pooled:
            if payment.tx_hash not in in_pool:
                payment.orphaned = True
                payment.updated_at = now
                session.add(payment)
                per_invoice[payment.invoice_id] += 1
        session.flush()
        self.reevaluate_all(session, per_invoice, now, reason="left the mempool", reverted=per_invoice)
        return set(per_invoice)

    def refresh_confirmations(self, session: Session, network: str, now: datetime) -> int:
        """Re-evaluate the invoices of ``network`` whose payments may have crossed the threshold
        (confirmations, or a coinbase output's maturity).

        Run on every scan step, so it reads only those invoices, never the open ones without
        payments: the unconfirmed ones through a partial index (``ix_invoice_unconfirmed``, whose
        predicate is :func:`unconfirmed`, word for word), the maturing ones from their payments
        (``ix_payment_maturing``).
        """
        waiting = select(Invoice.id).where(Invoice.network == network, unconfirmed())
        maturing = (
            select(Invoice.id)
            .join(Payment, col(Payment.invoice_id) == col(Invoice.id))
            .where(
                Invoice.network == network,
                Payment.network == network,
                maturing_payment(),
                # a coinbase output counts only once mature: watch its invoice until it closes
                col(Invoice.status).not_in([s.value for s in TERMINAL]),
            )
        )
        ids = session.execute(union(waiting, maturing)).scalars().all()
        return self.reevaluate_all(session, ids, now, reason="confirmations")  # id order, as everywhere

    def expiry_sweep(self, session: Session, now: datetime) -> int:
        """Evaluate every open invoice whose window has closed; release reserved unique amounts.

        A window has closed once the network has been scanned up to a block whose timestamp is at
        or after ``expires_at`` (:func:`chain_clock`): while the scanner lags, nothing expires.
        """
        expiring = [s.value for s in OPEN if s is not InvoiceStatus.WAITING_FOR_CONFIRMATIONS]
        changed = 0
        for network in sorted(self.networks):
            due = session.exec(
                select(Invoice.id).where(
                    Invoice.network == network,
                    col(Invoice.status).in_(expiring),
                    col(Invoice.expires_at) <= chain_clock(session, network, now),
                )
            ).all()
            changed += self.reevaluate_all(session, due, now, reason="expiry sweep")
        self._release_amounts(session, now)
        return changed

    @staticmethod
    def _release_amounts(session: Session, now: datetime) -> None:
        """Free the unique amounts of closed invoices once their late window has passed.

        An invoice still waiting for confirmations keeps its amount: its payment may yet be re-mined
        after a reorg and must then match it again, not a newer invoice issued the same amount.
        """
        rows = session.exec(
            select(Invoice, Store)
            .join(Store, col(Store.id) == col(Invoice.store_id))
            .where(
                col(Invoice.open_amount).is_not(None),
                col(Invoice.expires_at) <= now,
                col(Invoice.status).not_in([s.value for s in OPEN]),
            )
        ).all()
        for invoice, store in rows:
            if invoice.expires_at + timedelta(seconds=store.late_window_seconds) <= now:
                invoice.open_amount = None
                session.add(invoice)
