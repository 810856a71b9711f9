"""Fiat-priced invoices: pure rules for totals, payment attempts and the fiat status.

A fiat invoice is settled by payment attempts, each in one crypto currency at a rate locked when
the attempt was opened. Every payment of every attempt is valued in fiat minor units (cents):

- paid while the attempt's rate lock ran (block time <= ``locked_until``): at the locked rate;
- paid after the lock but inside the invoice window: at the rate of its block time when one is
  known, otherwise at the locked rate; either way flagged ``after_rate_lock``, never ignored.

The fiat sums then go through the very same :func:`paywatch.domain.status.evaluate` as a crypto
invoice (tolerance, late payments, PARTIAL, WAITING_FOR_CONFIRMATIONS, COMPLETED, expiry), with
each payment's confirmation already decided on its own network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from paywatch.domain.events import UPDATED, change_events
from paywatch.domain.rates import units_to_fiat
from paywatch.domain.status import Decision, Heights, InvoiceFacts, InvoiceStatus, PaymentFacts, Policy, evaluate

AFTER_RATE_LOCK = "after_rate_lock"
ZERO_DECIMAL_FIATS = frozenset({"JPY", "KRW", "ISK", "HUF", "CLP", "VND", "IDR"})


def fiat_exponent(code: str) -> int:
    """Minor-unit digits of a fiat currency (2 for most; 0 for JPY, KRW ...)."""
    return 0 if code.upper() in ZERO_DECIMAL_FIATS else 2


def to_minor(amount: Decimal, exponent: int) -> int:
    """Decimal fiat to integer minor units; the amount must have at most ``exponent`` places."""
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"at most {exponent} decimal places")
    return int(scaled)


def from_minor(minor: int, exponent: int) -> str:
    """Integer minor units to a fixed-point decimal string (``2999`` -> ``"29.99"``)."""
    return str(Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


@dataclass(frozen=True)
class Item:
    """One line: ``quantity`` > 0 of ``unit_price`` (minor units, >= 0)."""

    description: str
    quantity: int
    unit_price: int

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


def check_total(total: int, items: tuple[Item, ...], discount: int, tax: int) -> str | None:
    """The field that breaks ``total = subtotal - discount + tax``, or None when it adds up."""
    if discount < 0:
        return "discount"
    if tax < 0:
        return "tax"
    if not items:
        return None if discount == 0 and tax == 0 else "items"
    subtotal = sum(item.total for item in items)
    if discount > subtotal:
        return "discount"
    return None if subtotal - discount + tax == total else "price.amount"


@dataclass(frozen=True)
class AttemptPayment:
    """One matched payment of an attempt; ``confirmed`` was decided on its own network."""

    key: str
    amount: int
    block_time: datetime
    confirmed: bool
    succeeded: bool = True
    orphaned: bool = False
    admitted: bool = False
    block_time_rate: Decimal | None = None


@dataclass(frozen=True)
class AttemptFacts:
    """A payment attempt: its asset's decimals, the locked rate and how long it was locked."""

    decimals: int
    rate: Decimal
    locked_until: datetime
    payments: tuple[AttemptPayment, ...]


@dataclass(frozen=True)
class Valuation:
    """A payment's fiat value in minor units and whether it was valued after the rate lock."""

    key: str
    minor: int
    rate: Decimal
    after_lock: bool


def value_payment(attempt: AttemptFacts, payment: AttemptPayment, exponent: int) -> Valuation:
    """The fiat value of one payment under the rate rules in the module docstring."""
    after_lock = payment.block_time > attempt.locked_until
    rate = payment.block_time_rate if after_lock and payment.block_time_rate is not None else attempt.rate
    minor = to_minor(units_to_fiat(payment.amount, rate, attempt.decimals, exponent), exponent)
    return Valuation(payment.key, minor, rate, after_lock)


@dataclass(frozen=True)
class FiatDecision:
    """The fiat invoice's decision, its remainder and every payment's valuation."""

    decision: Decision
    remaining: int
    valuations: tuple[Valuation, ...]


FIAT_KEY = "fiat"
_FINAL = Heights(tip=0, final=0)  # block 0 is "final": confirmed payments; block 1 is not


def evaluate_fiat(
    total: int,
    exponent: int,
    expires_at: datetime,
    status: InvoiceStatus,
    flags: frozenset[str],
    attempts: tuple[AttemptFacts, ...],
    now: datetime,
    policy: Policy,
) -> FiatDecision:
    """Decide a fiat invoice's status from all its attempts' payments, valued in fiat minor units."""
    facts: list[PaymentFacts] = []
    valuations: list[Valuation] = []
    extra = set(flags)
    for attempt in attempts:
        for payment in attempt.payments:
            valuation = value_payment(attempt, payment, exponent)
            valuations.append(valuation)
            if valuation.after_lock and payment.succeeded and not payment.orphaned and valuation.minor > 0:
                extra.add(AFTER_RATE_LOCK)
            facts.append(
                PaymentFacts(
                    key=payment.key,
                    asset_key=FIAT_KEY,
                    amount=valuation.minor,
                    block_number=0 if payment.confirmed else 1,
                    block_time=payment.block_time,
                    succeeded=payment.succeeded,
                    orphaned=payment.orphaned,
                    admitted=payment.admitted,
                )
            )
    invoice = InvoiceFacts(
        amount=total,
        asset_key=FIAT_KEY,
        expires_at=expires_at,
        confirmations_required=0,
        status=status,
        flags=frozenset(extra),
    )
    decision = evaluate(invoice, facts, now, _FINAL, policy)
    return FiatDecision(decision, max(0, total - decision.seen), tuple(valuations))


def fiat_events(
    before: InvoiceStatus, after: InvoiceStatus, paid_before: int, paid_after: int, moved: bool
) -> list[str]:
    """The callback events of one change of a fiat invoice, in delivery order.

    More value received: ``invoice.payment_received``; less (a reorg, a revert): ``payment_reverted``;
    then the status event as for a crypto invoice; a status or flag change that none of these
    describes is ``invoice.updated``. Nothing changed: no event.
    """
    events = []
    if paid_after > paid_before:
        events.append("invoice.payment_received")
    elif paid_after < paid_before:
        events.append("invoice.payment_reverted")
    events.extend(change_events(before, after))
    if moved and not events:
        events.append(UPDATED)
    return events
