"""Hypothesis properties of ``evaluate()``: invariants that must hold for every input."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.domain.status import (
    TERMINAL,
    Flag,
    Heights,
    InvoiceFacts,
    InvoiceStatus,
    PaymentFacts,
    Policy,
    evaluate,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
TOKEN = "0xdac17f958d2ee523a2206206994597c13d831ec7"
ASSETS = [TOKEN, "native", "0x000000000000000000000000000000000000dead"]

settings.register_profile("paywatch-core", max_examples=200, deadline=None)
PROFILE = settings.get_profile("paywatch-core")

times = st.integers(min_value=-7200, max_value=7200).map(lambda s: EXPIRES + timedelta(seconds=s))
amounts = st.one_of(st.integers(0, 1000), st.integers(0, 2**256 - 1))


@st.composite
def payment_facts(draw: st.DrawFn, index: int = 0) -> PaymentFacts:
    return PaymentFacts(
        key=f"tx{draw(st.integers(0, 10**9))}:{index}",
        asset_key=draw(st.sampled_from(ASSETS)),
        amount=draw(amounts),
        block_number=draw(st.integers(0, 200)),
        block_time=draw(times),
        succeeded=draw(st.booleans()),
        orphaned=draw(st.booleans()),
    )


@st.composite
def payment_lists(draw: st.DrawFn) -> list[PaymentFacts]:
    n = draw(st.integers(0, 6))
    return [draw(payment_facts(i)) for i in range(n)]


invoices = st.builds(
    InvoiceFacts,
    amount=st.one_of(st.integers(1, 1000), st.integers(1, 2**256 - 1)),
    asset_key=st.just(TOKEN),
    expires_at=st.just(EXPIRES),
    confirmations_required=st.integers(0, 20),
    status=st.sampled_from(list(InvoiceStatus)),
    flags=st.frozensets(st.sampled_from([f.value for f in Flag])),
)
heights = st.builds(Heights, tip=st.integers(-1, 250), final=st.one_of(st.none(), st.integers(-1, 250)))
policies = st.builds(
    Policy,
    underpaid_tolerance=st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=4),
    accept_late_payments=st.booleans(),
    late_window=st.just(timedelta(0)),
)


@PROFILE
@given(invoices, payment_lists(), times, heights, policies)
def test_terminal_statuses_never_change(
    invoice: InvoiceFacts, payments: list[PaymentFacts], now: datetime, h: Heights, policy: Policy
) -> None:
    for status in TERMINAL:
        decision = evaluate(replace(invoice, status=status), payments, now, h, policy)
        assert decision.status is status
        # flags are facts, only ever added; `reverted` says a payment is off the chain right now
        assert decision.flags - {Flag.REVERTED} >= invoice.flags - {Flag.REVERTED}
        valid = [p for p in payments if p.succeeded and p.amount > 0 and p.asset_key == invoice.asset_key]
        assert (Flag.REVERTED in decision.flags) == any(p.orphaned for p in valid)


@PROFILE
@given(invoices, payment_lists(), st.data(), times, heights, policies)
def test_orphaning_or_removing_a_payment_never_increases_paid(
    invoice: InvoiceFacts, payments: list[PaymentFacts], data: st.DataObject, now: datetime, h: Heights, policy: Policy
) -> None:
    before = evaluate(invoice, payments, now, h, policy)
    if not payments:
        return
    i = data.draw(st.integers(0, len(payments) - 1))
    orphaned = [*payments[:i], replace(payments[i], orphaned=True), *payments[i + 1 :]]
    removed = payments[:i] + payments[i + 1 :]
    for after in (evaluate(invoice, orphaned, now, h, policy), evaluate(invoice, removed, now, h, policy)):
        assert after.seen <= before.seen
        assert after.confirmed <= before.confirmed


@PROFILE
@given(invoices, payment_lists(), st.lists(payment_facts(99), max_size=4), times, heights, policies)
def test_late_payments_never_count_unless_accepted(
    invoice: InvoiceFacts,
    payments: list[PaymentFacts],
    extra: list[PaymentFacts],
    now: datetime,
    h: Heights,
    policy: Policy,
) -> None:
    refused = replace(policy, accept_late_payments=False)
    late = [replace(p, block_time=max(p.block_time, EXPIRES + timedelta(seconds=1))) for p in extra]
    without = evaluate(invoice, payments, now, h, refused)
    with_late = evaluate(invoice, payments + late, now, h, refused)
    assert (with_late.status, with_late.seen, with_late.confirmed) == (without.status, without.seen, without.confirmed)
    assert with_late.flags - without.flags <= {Flag.PAID_LATE, Flag.REVERTED}
    counted_late = sum(p.amount for p in late if p.succeeded and not p.orphaned and p.asset_key == invoice.asset_key)
    accepted = evaluate(invoice, payments + late, now, h, replace(policy, accept_late_payments=True))
    on_time_accepted = evaluate(invoice, payments, now, h, replace(policy, accept_late_payments=True))
    assert accepted.seen == on_time_accepted.seen + counted_late


@PROFILE
@given(invoices, payment_lists(), st.randoms(use_true_random=False), times, heights, policies)
def test_result_depends_only_on_inputs(
    invoice: InvoiceFacts, payments: list[PaymentFacts], rnd: object, now: datetime, h: Heights, policy: Policy
) -> None:
    first = evaluate(invoice, payments, now, h, policy)
    assert evaluate(invoice, list(payments), now, h, policy) == first
    shuffled = list(payments)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert evaluate(invoice, tuple(shuffled), now, h, policy) == first


@PROFILE
@given(invoices, payment_lists(), times, heights, policies)
def test_sums_and_status_are_consistent(
    invoice: InvoiceFacts, payments: list[PaymentFacts], now: datetime, h: Heights, policy: Policy
) -> None:
    d = evaluate(invoice, payments, now, h, policy)
    assert 0 <= d.confirmed <= d.seen
    if invoice.status not in TERMINAL:
        assert (d.status is InvoiceStatus.COMPLETED) == (d.confirmed >= d.due)
        if d.status is not InvoiceStatus.COMPLETED:
            assert (d.status is InvoiceStatus.WAITING_FOR_CONFIRMATIONS) == (d.seen >= d.due)
        if d.status in (InvoiceStatus.PENDING, InvoiceStatus.EXPIRED):
            assert d.seen == 0
        if d.status in (InvoiceStatus.PARTIAL, InvoiceStatus.PARTIALLY_EXPIRED):
            assert 0 < d.seen < d.due
        if d.status in (InvoiceStatus.PENDING, InvoiceStatus.PARTIAL):
            assert now < invoice.expires_at
        if d.status in (InvoiceStatus.EXPIRED, InvoiceStatus.PARTIALLY_EXPIRED):
            assert now >= invoice.expires_at
    if Flag.OVERPAID in d.flags and Flag.OVERPAID not in invoice.flags:
        assert d.confirmed > invoice.amount
