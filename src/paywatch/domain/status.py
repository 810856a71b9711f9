"""Invoice statuses and ``evaluate()``: the one pure function that decides an invoice's state.

Time and chain heights are parameters; nothing here reads a clock, a database or a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction


class InvoiceStatus(StrEnum):
    """Where an invoice stands. COMPLETED and CANCELLED are terminal."""

    PENDING = "PENDING"
    WAITING_FOR_CONFIRMATIONS = "WAITING_FOR_CONFIRMATIONS"
    PARTIAL = "PARTIAL"
    PARTIALLY_EXPIRED = "PARTIALLY_EXPIRED"
    EXPIRED = "EXPIRED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({InvoiceStatus.COMPLETED, InvoiceStatus.CANCELLED})
OPEN = frozenset({InvoiceStatus.PENDING, InvoiceStatus.PARTIAL, InvoiceStatus.WAITING_FOR_CONFIRMATIONS})


class Flag(StrEnum):
    """Facts shown beside the status."""

    OVERPAID = "overpaid"
    PAID_LATE = "paid_late"
    MARKED_PAID = "marked_paid"
    REVERTED = "reverted"  # while a payment is orphaned; clears once it is back in a block (not the mempool)


@dataclass(frozen=True)
class Heights:
    """A network's heights: the tip, and the finalized/solidified height where one is used."""

    tip: int
    final: int | None = None


@dataclass(frozen=True)
class Policy:
    """A store's payment policy."""

    underpaid_tolerance: Decimal = Decimal(0)
    accept_late_payments: bool = False
    late_window: timedelta = timedelta(0)
    accept_replaceable_mempool: bool = True


@dataclass(frozen=True)
class PaymentFacts:
    """What evaluate() needs to know about one matched payment.

    ``admitted``: an admin attached it, an explicit decision that it counts even when late.
    """

    key: str
    asset_key: str
    amount: int
    block_number: int
    block_time: datetime
    succeeded: bool = True
    orphaned: bool = False
    admitted: bool = False
    mempool: bool = False
    replaceable: bool = False
    maturity: int = 0


@dataclass(frozen=True)
class InvoiceFacts:
    """What evaluate() needs to know about an invoice.

    ``confirmations_required`` of 0 means the network relies on its finality signal only.
    """

    amount: int
    asset_key: str
    expires_at: datetime
    confirmations_required: int
    status: InvoiceStatus = InvoiceStatus.PENDING
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """The result of evaluate(): the new status and flags, and the sums behind them."""

    status: InvoiceStatus
    flags: frozenset[str]
    due: int
    seen: int
    confirmed: int
    reason: str

    @property
    def pending(self) -> int:
        return self.seen - self.confirmed


def amount_due(amount: int, tolerance: Decimal) -> int:
    """The least amount that settles ``amount`` under ``tolerance`` (rounded up, never below 1)."""
    if not Decimal(0) <= tolerance < Decimal(1):
        raise ValueError("underpaid_tolerance must be in [0, 1)")
    # Exact rational arithmetic: Decimal's default 28-digit context would round 2**256-sized amounts.
    keep = 1 - Fraction(tolerance)
    return max(1, -(-amount * keep.numerator // keep.denominator))


def is_late(payment: PaymentFacts, invoice: InvoiceFacts) -> bool:
    """A payment is late when its block's timestamp is after the invoice's expiry."""
    return payment.block_time > invoice.expires_at


def is_confirmed(block_number: int, confirmations_required: int, heights: Heights) -> bool:
    """Confirmed by the finality signal, or by enough blocks on top (counting its own)."""
    if heights.final is not None and block_number <= heights.final:
        return True
    return confirmations_required > 0 and heights.tip - block_number + 1 >= confirmations_required


def confirmations(block_number: int, heights: Heights) -> int:
    """Blocks on top of and including ``block_number``; 0 if the tip has not reached it."""
    return max(0, heights.tip - block_number + 1)


def counts(payment: PaymentFacts, invoice: InvoiceFacts, policy: Policy) -> bool:
    """Whether a payment counts toward the invoice's amount."""
    return (
        payment.succeeded
        and not payment.orphaned
        and payment.amount > 0
        and payment.asset_key == invoice.asset_key
        and (policy.accept_late_payments or payment.admitted or not is_late(payment, invoice))
    )


def attach_refusal(payment: PaymentFacts, invoice: InvoiceFacts) -> tuple[str, str] | None:
    """Why an admin may not attach ``payment`` to ``invoice``: ``(field, reason)``; None when it may.

    An attached payment is admitted, so it counts whenever this returns None, late or not.
    """
    if payment.orphaned:
        return "transfer", "it was removed by a reorg; it cannot be credited"
    if not payment.succeeded or payment.amount <= 0:
        return "transfer", "it moved no value"
    if payment.asset_key != invoice.asset_key:
        return "invoice", "it is in another asset than the invoice's"
    if invoice.status is InvoiceStatus.CANCELLED:
        return "invoice", "the invoice is CANCELLED, so nothing counts toward it; attach it to a replacement invoice"
    return None


def usable(payment: PaymentFacts, heights: Heights, policy: Policy) -> bool:
    """A mempool sighting counts as seen (an RBF-signalling one only if the store accepts those);
    an output with a maturity (coinbase) counts only once it has that many confirmations."""
    if payment.mempool:
        return payment.maturity == 0 and (policy.accept_replaceable_mempool or not payment.replaceable)
    return payment.maturity <= 0 or confirmations(payment.block_number, heights) >= payment.maturity


def evaluate(
    invoice: InvoiceFacts,
    payments: list[PaymentFacts] | tuple[PaymentFacts, ...],
    now: datetime,
    heights: Heights,
    policy: Policy,
) -> Decision:
    """Decide the invoice's status and flags from its payments, the time and the chain heights."""
    due = amount_due(invoice.amount, policy.underpaid_tolerance)
    counted = [p for p in payments if counts(p, invoice, policy) and usable(p, heights, policy)]
    seen = sum(p.amount for p in counted)
    confirmed = sum(
        p.amount
        for p in counted
        if not p.mempool and is_confirmed(p.block_number, invoice.confirmations_required, heights)
    )
    flags = set(invoice.flags)
    if not any(p.mempool for p in payments):  # reverted while a payment is off the chain: back in a block clears it
        flags.discard(Flag.REVERTED)
    valid = [p for p in payments if p.succeeded and p.amount > 0 and p.asset_key == invoice.asset_key]
    if any(p.orphaned for p in valid):
        flags.add(Flag.REVERTED)
    if any(is_late(p, invoice) and not p.orphaned for p in valid):
        flags.add(Flag.PAID_LATE)

    def decide(status: InvoiceStatus, reason: str) -> Decision:
        return Decision(status, frozenset(flags), due, seen, confirmed, reason)

    if invoice.status is InvoiceStatus.COMPLETED or (invoice.status not in TERMINAL and confirmed >= due):
        if confirmed > invoice.amount:
            flags.add(Flag.OVERPAID)
        if invoice.status is InvoiceStatus.COMPLETED:
            return decide(invoice.status, "terminal")
        return decide(InvoiceStatus.COMPLETED, "confirmed payments cover the amount")
    if invoice.status in TERMINAL:
        return decide(invoice.status, "terminal")
    if seen >= due:
        return decide(InvoiceStatus.WAITING_FOR_CONFIRMATIONS, "payments cover the amount, awaiting confirmations")
    if now < invoice.expires_at:
        if seen > 0:
            return decide(InvoiceStatus.PARTIAL, "less than due received")
        return decide(InvoiceStatus.PENDING, "nothing received")
    if seen > 0:
        return decide(InvoiceStatus.PARTIALLY_EXPIRED, "expired with less than due")
    return decide(InvoiceStatus.EXPIRED, "expired with nothing paid")
