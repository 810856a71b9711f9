"""Translate stored rows into the pure domain's inputs (no decisions made here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, select

from paywatch.domain.status import Heights, InvoiceFacts, InvoiceStatus, PaymentFacts, Policy
from paywatch.store.models import Invoice, NetworkState, Payment, ScannedBlock, Store

#: the chain clock of a network never scanned: before every expiry
NEVER_SCANNED = datetime.min.replace(tzinfo=UTC)


def store_policy(store: Store) -> Policy:
    return Policy(
        underpaid_tolerance=Decimal(store.underpaid_tolerance),
        accept_late_payments=store.accept_late_payments,
        late_window=timedelta(seconds=store.late_window_seconds),
        accept_replaceable_mempool=store.accept_replaceable_mempool,
    )


def invoice_facts(invoice: Invoice) -> InvoiceFacts:
    return InvoiceFacts(
        amount=invoice.amount,
        asset_key=invoice.asset_key,
        expires_at=invoice.expires_at,
        confirmations_required=invoice.confirmations_required,
        status=InvoiceStatus(invoice.status),
        flags=frozenset(invoice.flags),
    )


def payment_facts(payment: Payment) -> PaymentFacts:
    return PaymentFacts(
        key=f"{payment.tx_hash}:{payment.log_index}",
        asset_key=payment.asset_key,
        amount=payment.amount,
        block_number=payment.block_number,
        block_time=payment.block_time,
        succeeded=payment.success,
        orphaned=payment.orphaned,
        admitted=payment.admitted,
        mempool=payment.mempool,
        replaceable=payment.replaceable,
        maturity=payment.maturity,
    )


def stored_heights(session: Session, network: str, *, uses_finality: bool) -> Heights:
    """The heights the scanner last recorded; nothing is confirmed before the first scan."""
    state = session.get(NetworkState, network)
    if state is None or state.tip_height is None:
        return Heights(tip=-1, final=-1 if uses_finality else None)
    final = (state.final_height if state.final_height is not None else -1) if uses_finality else None
    return Heights(tip=state.tip_height, final=final)


def chain_clock(session: Session, network: str, now: datetime) -> datetime:
    """The time up to which ``network`` has been scanned: the latest cursor block timestamp it ever
    stored (a reorg does not turn it back), at most ``now``.

    Expiry is judged by this clock, not the wall clock: while the scanner lags, a payment made
    on time (by block time) may still be found, so nothing expires. Before the first scan it is
    :data:`NEVER_SCANNED`.
    """
    row = session.exec(
        select(ScannedBlock.timestamp, NetworkState.clock_high)
        .join(NetworkState, NetworkState.network == ScannedBlock.network)  # type: ignore[arg-type]
        .where(ScannedBlock.network == network, ScannedBlock.number == NetworkState.cursor_height)
    ).first()
    if row is None:
        return NEVER_SCANNED
    scanned, high = row
    # A reorg moves the cursor back to an older block; the clock stays where it was, so a window
    # once closed by block time never opens again.
    return min(now, scanned if high is None else max(scanned, high))
