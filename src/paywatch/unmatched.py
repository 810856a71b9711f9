"""The unmatched inbox: transfers to watched addresses that no invoice claimed, and attaching them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from paywatch.audit import audit
from paywatch.domain.status import attach_refusal
from paywatch.errors import ConflictError, NotFoundError
from paywatch.invoices import get_invoice
from paywatch.ledger import Ledger
from paywatch.policy import invoice_facts, payment_facts
from paywatch.store.models import Payment, UnmatchedTransfer, transfer_columns


def list_unmatched(
    session: Session, *, network: str | None = None, include_attached: bool = False, limit: int = 100
) -> list[UnmatchedTransfer]:
    query = select(UnmatchedTransfer)
    if network is not None:
        query = query.where(UnmatchedTransfer.network == network)
    if not include_attached:
        query = query.where(col(UnmatchedTransfer.attached_invoice_id).is_(None))
    return list(session.exec(query.order_by(col(UnmatchedTransfer.id).desc()).limit(limit)))


def attach(
    session: Session, ledger: Ledger, transfer_id: int, invoice_id: str, now: datetime, *, actor: str
) -> Payment:
    """Credit an unmatched transfer to an invoice: audited, re-evaluated, callbacks fired.

    An attach is an admin's explicit decision: the payment is ``admitted``, so it counts even when
    late (flagged ``paid_late``). A transfer that could not count is refused with the reason.
    """
    row = session.get(UnmatchedTransfer, transfer_id)
    if row is None:
        raise NotFoundError(f"no unmatched transfer {transfer_id}", field="transfer")
    invoice = ledger.lock_invoice(session, get_invoice(session, None, invoice_id).id)  # judged under the lock
    if row.attached_invoice_id is not None:
        raise ConflictError(
            f"transfer {transfer_id} is already attached to {row.attached_invoice_id}", field="transfer"
        )
    if row.network != invoice.network:
        raise ConflictError(f"transfer is on {row.network}, invoice on {invoice.network}", field="invoice")
    if row.amount < ledger.networks[row.network].min_units(row.asset_key):
        raise ConflictError(
            f"transfer {transfer_id} is dust (below the min_amount of {invoice.asset}); it never changes an invoice",
            field="transfer",
        )
    payment = Payment(
        **transfer_columns(row),
        invoice_id=invoice.id,
        late=row.block_time > invoice.expires_at,
        admitted=True,  # an admin's explicit decision: it counts, late or not (flagged paid_late)
        created_at=now,
        updated_at=now,
    )
    refusal = attach_refusal(replace(payment_facts(payment), orphaned=row.orphaned), invoice_facts(invoice))
    if refusal is not None:
        field, reason = refusal
        raise ConflictError(f"transfer {transfer_id} cannot be attached to {invoice.id}: {reason}", field=field)
    try:
        with session.begin_nested():
            session.add(payment)
    except IntegrityError:
        raise ConflictError("this transfer is already credited to an invoice", field="transfer") from None
    row.attached_invoice_id = invoice.id
    row.attached_at = now
    session.add(row)
    audit(
        session,
        now,
        actor,
        "unmatched.attach",
        invoice.id,
        transfer_id=transfer_id,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
    )
    ledger.reevaluate(
        session,
        ledger.lock_invoice(session, invoice.id),
        now,
        reason=f"attached by {actor}",
        new_payments_late=[payment.late],
    )
    return payment
