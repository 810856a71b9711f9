"""The worker's checkout jobs: the scheduled rate refresh and the re-evaluation of fiat invoices.

``refresh_rates`` fetches every asset networks.yaml offers, every ``refresh_seconds``, into the
shared rate history (while checkout is in use). ``settle`` re-evaluates each fiat invoice whose
attempts' crypto invoices changed (the ledger queues them in ``attempt_changes``, in the same
transaction as the change) or whose window has closed, so that its callbacks go out without anyone
reading its page.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from paywatch.checkout.context import Checkout
from paywatch.checkout.models import AttemptChange, FiatInvoice, PaymentAttempt
from paywatch.checkout.rates.stored import checkout_in_use, offered_assets, refresh_stored
from paywatch.checkout.service import lock_fiat, reevaluate
from paywatch.config import AppConfig
from paywatch.domain.status import InvoiceStatus
from paywatch.store.db import session_scope

#: fiat statuses whose window closing is a change of its own (WAITING_FOR_CONFIRMATIONS waits on)
EXPIRING = (InvoiceStatus.PENDING.value, InvoiceStatus.PARTIAL.value)


def settle(session: Session, config: AppConfig, checkout: Checkout, now: datetime, *, limit: int = 200) -> int:
    """Re-evaluate the fiat invoices due (attempt changed, or window closed), locked in id order after
    nothing else; consume the queued changes. Returns how many invoices changed."""
    changes = list(
        session.exec(
            select(AttemptChange).order_by(col(AttemptChange.id)).limit(limit).with_for_update(skip_locked=True)
        )
    )
    due: set[str] = set()
    crypto_ids = {change.invoice_id for change in changes}
    if crypto_ids:
        owners = select(PaymentAttempt.fiat_invoice_id).where(col(PaymentAttempt.invoice_id).in_(crypto_ids))
        due.update(session.exec(owners))
    expiring = select(FiatInvoice.id).where(col(FiatInvoice.status).in_(EXPIRING), col(FiatInvoice.expires_at) <= now)
    due.update(session.exec(expiring.limit(limit)))
    rates = checkout.reader(session)
    changed = 0
    for fiat_id in sorted(due):
        invoice = lock_fiat(session, fiat_id)
        if invoice is None:
            continue
        version = invoice.status_version
        reevaluate(session, config, rates, checkout.settings, invoice, now)
        changed += invoice.status_version != version
    if changes:
        session.exec(delete(AttemptChange).where(col(AttemptChange.id).in_([c.id for c in changes])))
    return changed


class CheckoutJobs:
    """The two checkout jobs of one worker replica."""

    def __init__(self, config: AppConfig, engine: Engine, checkout: Checkout, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.engine = engine
        self.checkout = checkout
        self.clock = clock
        self.assets = offered_assets(config.networks)

    def refresh_rates(self) -> int:
        """Fetch and store every offered asset's rates (while a fiat invoice is open or recent)."""
        book = self.checkout.rates
        pairs = book.pairs(self.assets)
        if not book.sources or not pairs:
            return 0
        now = self.clock()
        with session_scope(self.engine) as session:
            if not checkout_in_use(session, now, timedelta(seconds=book.config.history_seconds)):
                return 0
        return refresh_stored(self.engine, book, pairs, now, prune=True)

    def settle(self) -> int:
        """Re-evaluate the fiat invoices that are due (see :func:`settle`)."""
        with session_scope(self.engine) as session:
            return settle(session, self.config, self.checkout, self.clock())
