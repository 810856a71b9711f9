"""Every change to money state goes through here, inside the caller's transaction.

Each change runs ``evaluate()``, appends to the status history when status or flags move, and
writes the callback events to the outbox, all in the same transaction as the change itself.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Set
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select, update

from paywatch.config import NetworkConfig
from paywatch.domain.events import change_events
from paywatch.domain.matching import Match, Unmatched
from paywatch.domain.status import OPEN, TERMINAL, InvoiceStatus, evaluate
from paywatch.domain.transfer import Transfer
from paywatch.metrics import TRANSITIONS
from paywatch.outbox import emit
from paywatch.policy import invoice_facts, payment_facts, store_policy, stored_heights
from paywatch.store.models import (
    Invoice,
    Payment,
    StatusHistory,
    Store,
    UnmatchedTransfer,
    same_transfer,
    transfer_columns,
)

log = logging.getLogger(__name__)


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
        extra_events: Iterable[str] = (),
    ) -> bool:
        """Evaluate one invoice and persist what changed; True if anything did."""
        network = self.networks[invoice.network]
        store = session.get(Store, invoice.store_id)
        assert store is not None
        payments = list(session.exec(select(Payment).where(Payment.invoice_id == invoice.id)))
        heights = stored_heights(session, invoice.network, uses_finality=network.finality is not None)
        decision = evaluate(
            invoice_facts(invoice), [payment_facts(p) for p in payments], now, heights, store_policy(store)
        )
        before = InvoiceStatus(invoice.status)
        events = [
            *extra_events,
            *change_events(before, decision.status, new_payments_late=new_payments_late, reverted=reverted),
        ]
        flags = sorted(decision.flags)
        moved = decision.status != before or flags != sorted(invoice.flags)
        sums_changed = (invoice.amount_paid, invoice.amount_confirmed) != (decision.seen, decision.confirmed)
        if not (moved or sums_changed or events):
            return False
        invoice.status = decision.status.value
        invoice.flags = flags
        invoice.amount_paid = decision.seen
        invoice.amount_confirmed = decision.confirmed
        invoice.updated_at = now
        if decision.status in TERMINAL:
            invoice.open_amount = None
        session.add(invoice)
        if moved and not events:
            invoice.status_version += 1  # a change without an event still moves the version
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
        if moved:
            why = reason if decision.status == before else f"{reason}: {decision.reason}"
            session.add(
                StatusHistory(
                    invoice_id=invoice.id,
                    status=invoice.status,
                    status_version=invoice.status_version + len(events),
                    flags=flags,
                    reason=why[:200],
                    at=now,
                )
            )
        emit(session, invoice, events, now, network)
        return True

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
        """A manual terminal move (cancel, mark-paid): history and outbox like any other change."""
        invoice.status = status.value
        TRANSITIONS.labels(status.value).inc()
        if flag and flag not in invoice.flags:
            invoice.flags = sorted([*invoice.flags, flag])
        invoice.open_amount = None
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

    # --- payments from scanners ------------------------------------------------------------------

    def record_matches(self, session: Session, matches: Iterable[Match], now: datetime) -> set[str]:
        """Store matched transfers idempotently and re-evaluate their invoices; return those touched."""
        late_by_invoice: dict[str, list[bool]] = defaultdict(list)
        touched: set[str] = set()
        for match in matches:
            invoice = session.get(Invoice, match.invoice_id)
            if invoice is None:
                continue
            stored = self._store_payment(session, invoice, match.transfer, now)
            if stored is None:
                continue
            new, owner_id = stored
            touched.add(owner_id)
            if new:
                late_by_invoice[owner_id].append(match.transfer.block_time > invoice.expires_at)
        for invoice_id in sorted(touched):
            invoice = self.lock_invoice(session, invoice_id)
            self.reevaluate(session, invoice, now, reason="payment", new_payments_late=late_by_invoice[invoice_id])
        return touched

    def _store_payment(
        self, session: Session, invoice: Invoice, transfer: Transfer, now: datetime
    ) -> tuple[bool, str] | None:
        """(True, invoice): a new payment; (False, owner): an existing one moved (re-mined); None: no change.

        A re-mined transfer keeps the payment row it already has, so the invoice to re-evaluate is
        that row's owner, even if matching now points elsewhere.
        """
        existing = self._payment(session, transfer)
        if existing is None:
            payment = Payment(
                **transfer_columns(transfer),
                invoice_id=invoice.id,
                success=transfer.success,
                late=transfer.block_time > invoice.expires_at,
                mempool=transfer.mempool,
                replaceable=transfer.replaceable,
                maturity=transfer.maturity,
                created_at=now,
                updated_at=now,
            )
            try:
                with session.begin_nested():
                    session.add(payment)
            except IntegrityError:  # another writer stored it first
                existing = self._payment(session, transfer)
                if existing is None:
                    raise
            else:
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
                return True, invoice.id
        if not existing.orphaned and (transfer.mempool or existing.block_hash == transfer.block_hash):
            return None  # known; a mempool sighting never undoes a block
        if existing.invoice_id != invoice.id:
            owner = session.get(Invoice, existing.invoice_id)
            assert owner is not None
            invoice = owner
        existing.orphaned = False
        existing.block_number = transfer.block_number
        existing.block_hash = transfer.block_hash
        existing.block_time = transfer.block_time
        existing.late = transfer.block_time > invoice.expires_at
        existing.mempool = transfer.mempool
        existing.replaceable = transfer.replaceable
        existing.updated_at = now
        session.add(existing)
        return False, existing.invoice_id

    @staticmethod
    def _payment(session: Session, transfer: Transfer) -> Payment | None:
        return session.exec(select(Payment).where(same_transfer(Payment, transfer))).first()

    @staticmethod
    def lock_invoice(session: Session, invoice_id: str) -> Invoice:
        """The invoice row, locked for update until the transaction ends (PostgreSQL).

        ``populate_existing``: an invoice this session loaded before taking the lock is re-read, so
        a change another transaction committed while we waited is not overwritten with stale values.
        """
        stmt = (
            select(Invoice).where(Invoice.id == invoice_id).with_for_update().execution_options(populate_existing=True)
        )
        invoice = session.exec(stmt).one()
        return invoice

    def record_unmatched(self, session: Session, items: Iterable[Unmatched], now: datetime) -> int:
        """Put unattributed transfers in the inbox, idempotently; return how many were new or revived."""
        count = 0
        for item in items:
            t = item.transfer
            row = session.exec(select(UnmatchedTransfer).where(same_transfer(UnmatchedTransfer, t))).first()
            if row is None:
                row = UnmatchedTransfer(
                    **transfer_columns(t),
                    reason=item.reason.value,
                    hint_invoice_id=item.invoice_id,
                    created_at=now,
                )
            elif not row.orphaned and row.block_hash == t.block_hash:
                continue
            else:
                row.orphaned = False
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
        per_invoice: dict[str, int] = defaultdict(int)
        for payment in orphaned:
            payment.orphaned = True
            payment.updated_at = now
            session.add(payment)
            per_invoice[payment.invoice_id] += 1
        session.exec(
            update(UnmatchedTransfer)
            .where(col(UnmatchedTransfer.network) == network, col(UnmatchedTransfer.block_number) >= height)
            .values(orphaned=True)
        )
        session.flush()
        for invoice_id, count in sorted(per_invoice.items()):
            self.reevaluate(session, self.lock_invoice(session, invoice_id), now, reason="reorg", reverted=count)
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
        for invoice_id, count in sorted(per_invoice.items()):
            invoice = self.lock_invoice(session, invoice_id)
            self.reevaluate(session, invoice, now, reason="left the mempool", reverted=count)
        return set(per_invoice)

    def refresh_confirmations(self, session: Session, network: str, now: datetime) -> int:
        """Re-evaluate the invoices of ``network`` whose payments may have crossed the threshold
        (confirmations, or a coinbase output's maturity)."""
        maturing = select(Payment.invoice_id).where(
            Payment.network == network, col(Payment.maturity) > 0, col(Payment.orphaned).is_(False)
        )
        waiting = session.exec(
            select(Invoice.id).where(
                Invoice.network == network,
                or_(
                    col(Invoice.status) == InvoiceStatus.WAITING_FOR_CONFIRMATIONS.value,
                    col(Invoice.amount_paid) != col(Invoice.amount_confirmed),
                    # a coinbase output counts only once mature: watch its invoice until it closes
                    col(Invoice.id).in_(maturing) & col(Invoice.status).not_in([s.value for s in TERMINAL]),
                ),
            )
        ).all()
        changed = 0
        for invoice_id in waiting:
            changed += self.reevaluate(session, self.lock_invoice(session, invoice_id), now, reason="confirmations")
        return changed

    def expiry_sweep(self, session: Session, now: datetime) -> int:
        """Evaluate every open invoice whose window has closed; release reserved unique amounts."""
        due = session.exec(
            select(Invoice.id).where(
                col(Invoice.status).in_([s.value for s in OPEN if s is not InvoiceStatus.WAITING_FOR_CONFIRMATIONS]),
                col(Invoice.expires_at) <= now,
            )
        ).all()
        changed = 0
        for invoice_id in due:
            invoice = self.lock_invoice(session, invoice_id)
            if invoice.network in self.networks:
                changed += self.reevaluate(session, invoice, now, reason="expiry sweep")
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
