"""Pure fiat-invoice rules: totals, valuation at the locked rate, after the lock, and the fiat status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from paywatch.domain.checkout import (
    AFTER_RATE_LOCK,
    AttemptFacts,
    AttemptPayment,
    Item,
    check_total,
    evaluate_fiat,
    fiat_exponent,
    from_minor,
    to_minor,
)
from paywatch.domain.status import Flag, InvoiceStatus, Policy

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
LOCK = T0 + timedelta(minutes=15)
ETH = 10**18


def attempt(*payments: AttemptPayment, rate: str = "3000", decimals: int = 18) -> AttemptFacts:
    return AttemptFacts(decimals=decimals, rate=Decimal(rate), locked_until=LOCK, payments=payments)


def pay(amount: int, *, minutes: int = 1, confirmed: bool = True, **kw: object) -> AttemptPayment:
    return AttemptPayment(
        key=f"p{amount}-{minutes}",
        amount=amount,
        block_time=T0 + timedelta(minutes=minutes),
        confirmed=confirmed,
        **kw,  # type: ignore[arg-type]
    )


def run(total: int, *attempts: AttemptFacts, now: datetime = T0 + timedelta(minutes=5), **policy: object):  # type: ignore[no-untyped-def]
    return evaluate_fiat(
        total,
        2,
        EXPIRES,
        InvoiceStatus.PENDING,
        frozenset(),
        attempts,
        now,
        Policy(**policy),  # type: ignore[arg-type]
    )


def test_totals_add_up_or_name_the_field() -> None:
    items = (Item("mug", 2, 1000), Item("tea", 1, 999))
    assert check_total(2999 - 500 + 100, items, 500, 100) is None
    assert check_total(2999, items, 500, 100) == "price.amount"
    assert check_total(100, items, 3000, 0) == "discount"
    assert check_total(100, (), 0, 5) == "items"
    assert check_total(100, (), 0, 0) is None


def test_minor_units_round_trip() -> None:
    assert to_minor(Decimal("29.99"), 2) == 2999 and from_minor(2999, 2) == "29.99"
    assert fiat_exponent("JPY") == 0 and fiat_exponent("usd") == 2
    with pytest.raises(ValueError):
        to_minor(Decimal("1.001"), 2)


@pytest.mark.parametrize(
    ("payments", "status", "remaining"),
    [
        ((), InvoiceStatus.PENDING, 3000),
        (((ETH // 200, True),), InvoiceStatus.PARTIAL, 1500),
        (((ETH // 100, False),), InvoiceStatus.WAITING_FOR_CONFIRMATIONS, 0),
        (((ETH // 100, True),), InvoiceStatus.COMPLETED, 0),
        (((ETH // 200, True), (ETH // 200, False)), InvoiceStatus.WAITING_FOR_CONFIRMATIONS, 0),
    ],
)
def test_status_follows_the_fiat_total(
    payments: tuple[tuple[int, bool], ...], status: InvoiceStatus, remaining: int
) -> None:
    # 30.00 USD at 3000 USD/ETH = 0.01 ETH
    got = run(3000, attempt(*(pay(a, minutes=i + 1, confirmed=c) for i, (a, c) in enumerate(payments))))
    assert got.decision.status is status
    assert got.remaining == remaining


def test_attempts_in_two_currencies_add_up_at_their_locked_rates() -> None:
    eth = attempt(pay(ETH // 200), rate="3000")  # 0.005 ETH at 3000 = 15.00
    usdt = attempt(pay(15_000_000, minutes=3), rate="1", decimals=6)  # 15 USDT at 1 = 15.00
    got = run(3000, eth, usdt)
    assert got.decision.status is InvoiceStatus.COMPLETED
    assert [v.minor for v in got.valuations] == [1500, 1500]


def test_underpaid_within_tolerance_completes() -> None:
    got = run(3000, attempt(pay(29_850_000, minutes=2), rate="1", decimals=6), underpaid_tolerance=Decimal("0.01"))
    assert got.decision.status is InvoiceStatus.COMPLETED


def test_after_rate_lock_is_valued_at_block_time_rate_and_flagged() -> None:
    late = pay(ETH // 100, minutes=20, block_time_rate=Decimal("2500"))  # 0.01 ETH at 2500 = 25.00
    got = run(3000, attempt(late), now=T0 + timedelta(minutes=25))
    assert got.valuations[0].minor == 2500 and got.valuations[0].after_lock
    assert got.decision.status is InvoiceStatus.PARTIAL and got.remaining == 500
    assert AFTER_RATE_LOCK in got.decision.flags


def test_after_rate_lock_without_a_rate_uses_the_locked_rate_flagged() -> None:
    got = run(3000, attempt(pay(ETH // 100, minutes=20)), now=T0 + timedelta(minutes=25))
    assert got.valuations[0].minor == 3000
    assert got.decision.status is InvoiceStatus.COMPLETED and AFTER_RATE_LOCK in got.decision.flags


def test_late_payment_after_invoice_expiry_is_flagged_and_counts_only_by_policy() -> None:
    late = pay(ETH // 100, minutes=61)
    got = run(3000, attempt(late), now=T0 + timedelta(minutes=70))
    assert got.decision.status is InvoiceStatus.EXPIRED and Flag.PAID_LATE in got.decision.flags
    accepted = run(3000, attempt(late), now=T0 + timedelta(minutes=70), accept_late_payments=True)
    assert accepted.decision.status is InvoiceStatus.COMPLETED


def test_partial_then_window_closes() -> None:
    got = run(3000, attempt(pay(ETH // 200)), now=EXPIRES + timedelta(seconds=1))
    assert got.decision.status is InvoiceStatus.PARTIALLY_EXPIRED and got.remaining == 1500


def test_overpaid_and_reverted() -> None:
    got = run(3000, attempt(pay(ETH // 50)))
    assert got.decision.status is InvoiceStatus.COMPLETED and Flag.OVERPAID in got.decision.flags
    orphan = run(3000, attempt(pay(ETH // 100, orphaned=True)))
    assert orphan.decision.status is InvoiceStatus.PENDING and Flag.REVERTED in orphan.decision.flags
