"""evaluate() with mempool sightings, BIP125 replaceability and coinbase maturity (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paywatch.domain.status import Heights, InvoiceFacts, InvoiceStatus, PaymentFacts, Policy, evaluate

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INVOICE = InvoiceFacts(amount=100, asset_key="native", expires_at=T0 + timedelta(hours=1), confirmations_required=3)


def pay(amount: int, block: int, **kw: bool | int) -> PaymentFacts:
    return PaymentFacts(
        key=f"tx{block}:{amount}",
        asset_key="native",
        amount=amount,
        block_number=block,
        block_time=T0 + timedelta(minutes=5),
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payments", "policy", "status", "seen", "confirmed"),
    [
        ([pay(100, -1, mempool=True)], Policy(), InvoiceStatus.WAITING_FOR_CONFIRMATIONS, 100, 0),
        ([pay(60, -1, mempool=True)], Policy(), InvoiceStatus.PARTIAL, 60, 0),
        ([pay(100, -1, mempool=True, replaceable=True)], Policy(), InvoiceStatus.WAITING_FOR_CONFIRMATIONS, 100, 0),
        (
            [pay(100, -1, mempool=True, replaceable=True)],
            Policy(accept_replaceable_mempool=False),
            InvoiceStatus.PENDING,
            0,
            0,
        ),
        # a mined RBF-signalling payment counts whatever the policy
        ([pay(100, 90, replaceable=True)], Policy(accept_replaceable_mempool=False), InvoiceStatus.COMPLETED, 100, 100),
        ([pay(100, -1, mempool=True, orphaned=True)], Policy(), InvoiceStatus.PENDING, 0, 0),
        # coinbase: nothing before 100 confirmations (block 2 at tip 100 has 99), then all of it
        ([pay(100, 2, maturity=100)], Policy(), InvoiceStatus.PENDING, 0, 0),
        ([pay(100, 1, maturity=100)], Policy(), InvoiceStatus.COMPLETED, 100, 100),
        (
            [pay(40, 1, maturity=100), pay(60, -1, mempool=True)],
            Policy(),
            InvoiceStatus.WAITING_FOR_CONFIRMATIONS,
            100,
            40,
        ),
    ],
)
def test_mempool_rbf_and_maturity(
    payments: list[PaymentFacts], policy: Policy, status: InvoiceStatus, seen: int, confirmed: int
) -> None:
    decision = evaluate(INVOICE, payments, T0 + timedelta(minutes=10), Heights(tip=100), policy)
    assert (decision.status, decision.seen, decision.confirmed) == (status, seen, confirmed)


def test_a_dropped_mempool_payment_flags_reverted() -> None:
    decision = evaluate(INVOICE, [pay(100, -1, mempool=True, orphaned=True)], T0, Heights(tip=100), Policy())
    assert decision.flags == frozenset({"reverted"})
