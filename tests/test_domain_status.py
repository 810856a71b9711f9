"""Table-driven tests of every rule of ``evaluate()`` (docs/invoices.md, "The rules of `evaluate()`")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from paywatch.domain.events import EVENT_TYPES, STATUS_EVENTS, change_events
from paywatch.domain.status import (
    Flag,
    Heights,
    InvoiceFacts,
    InvoiceStatus,
    PaymentFacts,
    Policy,
    amount_due,
    confirmations,
    evaluate,
    is_confirmed,
)

S = InvoiceStatus
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
BEFORE = T0 + timedelta(minutes=30)  # "now" while the window is open
AFTER = T0 + timedelta(hours=2)  # "now" once it has closed
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
FAKE = "0x000000000000000000000000000000000000dead"
TIP = 100  # with 3 confirmations required, blocks <= 98 are confirmed
CONFIRMED_BLOCK = 98
UNCONFIRMED_BLOCK = 99

_counter = iter(range(10**9))


def pay(
    amount: int,
    *,
    block: int = CONFIRMED_BLOCK,
    at: datetime = T0 + timedelta(minutes=10),
    asset: str = USDT,
    succeeded: bool = True,
    orphaned: bool = False,
) -> PaymentFacts:
    return PaymentFacts(
        key=f"0xtx{next(_counter)}:0",
        asset_key=asset,
        amount=amount,
        block_number=block,
        block_time=at,
        succeeded=succeeded,
        orphaned=orphaned,
    )


def inv(
    amount: int = 100,
    *,
    status: InvoiceStatus = S.PENDING,
    confirmations_required: int = 3,
    flags: frozenset[str] = frozenset(),
) -> InvoiceFacts:
    return InvoiceFacts(
        amount=amount,
        asset_key=USDT,
        expires_at=EXPIRES,
        confirmations_required=confirmations_required,
        status=status,
        flags=flags,
    )


@dataclass(frozen=True)
class Case:
    payments: tuple[PaymentFacts, ...]
    expect: InvoiceStatus
    seen: int
    confirmed: int
    flags: frozenset[str] = frozenset()
    invoice: InvoiceFacts = field(default_factory=inv)
    now: datetime = BEFORE
    heights: Heights = field(default_factory=lambda: Heights(tip=TIP))
    policy: Policy = field(default_factory=Policy)


def case(id_: str, *payments: PaymentFacts, expect: InvoiceStatus, seen: int, confirmed: int, **kw: object) -> object:
    flags = kw.pop("flags", ())
    assert isinstance(flags, (tuple, list, set, frozenset))
    return pytest.param(
        Case(payments, expect, seen, confirmed, flags=frozenset(str(f) for f in flags), **kw),  # type: ignore[arg-type]
        id=id_,
    )


LATE = EXPIRES + timedelta(seconds=1)
ACCEPT_LATE = Policy(accept_late_payments=True)
TOL_1PCT = Policy(underpaid_tolerance=Decimal("0.01"))

CASES = [
    # --- which payments count -------------------------------------------------------------------
    case("counts:valid-confirmed", pay(100), expect=S.COMPLETED, seen=100, confirmed=100),
    case("counts:failed-tx-ignored", pay(100, succeeded=False), expect=S.PENDING, seen=0, confirmed=0),
    case(
        "counts:orphaned-ignored-and-flagged",
        pay(100, orphaned=True),
        expect=S.PENDING,
        seen=0,
        confirmed=0,
        flags=[Flag.REVERTED],
    ),
    case("counts:wrong-contract-ignored", pay(100, asset=FAKE), expect=S.PENDING, seen=0, confirmed=0),
    case("counts:native-coin-on-token-invoice", pay(10**18, asset="native"), expect=S.PENDING, seen=0, confirmed=0),
    case("counts:zero-amount-ignored", pay(0), expect=S.PENDING, seen=0, confirmed=0),
    case(
        "counts:only-valid-part-counts",
        pay(60),
        pay(40, succeeded=False),
        pay(40, asset=FAKE),
        pay(40, orphaned=True),
        expect=S.PARTIAL,
        seen=60,
        confirmed=60,
        flags=[Flag.REVERTED],
    ),
    case("counts:several-payments-add-up", pay(60), pay(40), expect=S.COMPLETED, seen=100, confirmed=100),
    # --- on time is judged by block time, not by when the watcher saw it ------------------------
    case(
        "ontime:block-at-expiry-instant-counts",
        pay(100, at=EXPIRES),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        now=AFTER,
    ),
    case(
        "ontime:mined-before-expiry-seen-after-expiry-waits",
        pay(100, block=UNCONFIRMED_BLOCK, at=EXPIRES - timedelta(seconds=1)),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
        now=AFTER + timedelta(days=3),
    ),
    case(
        "ontime:one-second-late-is-late",
        pay(100, at=LATE),
        expect=S.EXPIRED,
        seen=0,
        confirmed=0,
        now=AFTER,
        flags=[Flag.PAID_LATE],
    ),
    # --- late payments -------------------------------------------------------------------------
    case(
        "late:not-accepted-partial-stays-partially-expired",
        pay(40),
        pay(60, at=LATE),
        expect=S.PARTIALLY_EXPIRED,
        seen=40,
        confirmed=40,
        now=AFTER,
        flags=[Flag.PAID_LATE],
    ),
    case(
        "late:accepted-completes",
        pay(100, at=LATE),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        now=AFTER,
        policy=ACCEPT_LATE,
        flags=[Flag.PAID_LATE],
    ),
    case(
        "late:accepted-unconfirmed-waits",
        pay(100, at=LATE, block=UNCONFIRMED_BLOCK),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
        now=AFTER,
        policy=ACCEPT_LATE,
        flags=[Flag.PAID_LATE],
    ),
    case(
        "late:accepted-but-short-is-partially-expired",
        pay(30, at=LATE),
        expect=S.PARTIALLY_EXPIRED,
        seen=30,
        confirmed=30,
        now=AFTER,
        policy=ACCEPT_LATE,
        flags=[Flag.PAID_LATE],
    ),
    case(
        "late:accepted-reopens-expired-invoice",
        pay(100, at=LATE),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        now=AFTER,
        policy=ACCEPT_LATE,
        invoice=inv(status=S.EXPIRED),
        flags=[Flag.PAID_LATE],
    ),
    case(
        "late:orphaned-late-payment-does-not-flag",
        pay(100, at=LATE, orphaned=True),
        expect=S.EXPIRED,
        seen=0,
        confirmed=0,
        now=AFTER,
        flags=[Flag.REVERTED],
    ),
    # --- confirmations and finality ------------------------------------------------------------
    case(
        "confirm:exactly-required-blocks",
        pay(100, block=TIP - 3 + 1),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
    ),
    case(
        "confirm:one-block-short-waits",
        pay(100, block=TIP - 3 + 2),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
    ),
    case(
        "confirm:block-above-stored-tip-waits",
        pay(100, block=TIP + 5),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
    ),
    case(
        "confirm:finalized-height-confirms-despite-few-blocks",
        pay(100, block=UNCONFIRMED_BLOCK),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        heights=Heights(tip=TIP, final=UNCONFIRMED_BLOCK),
    ),
    case(
        "confirm:finality-only-at-final-height",
        pay(100, block=50),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        invoice=inv(confirmations_required=0),
        heights=Heights(tip=TIP, final=50),
    ),
    case(
        "confirm:finality-only-above-final-height-waits-however-deep",
        pay(100, block=51),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
        invoice=inv(confirmations_required=0),
        heights=Heights(tip=TIP + 10_000, final=50),
    ),
    case(
        "confirm:finality-only-without-final-height-waits",
        pay(100, block=1),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
        invoice=inv(confirmations_required=0),
        heights=Heights(tip=TIP),
    ),
    case(
        "confirm:partly-confirmed-waits",
        pay(60),
        pay(40, block=UNCONFIRMED_BLOCK),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=60,
    ),
    # --- underpaid tolerance ---------------------------------------------------------------------
    case("tolerance:within-completes", pay(99), expect=S.COMPLETED, seen=99, confirmed=99, policy=TOL_1PCT),
    case("tolerance:below-is-partial", pay(98), expect=S.PARTIAL, seen=98, confirmed=98, policy=TOL_1PCT),
    case(
        "tolerance:due-rounds-up-short-by-one",
        pay(990),
        expect=S.PARTIAL,
        seen=990,
        confirmed=990,
        policy=TOL_1PCT,
        invoice=inv(1001),
    ),
    case(
        "tolerance:due-rounds-up-exact",
        pay(991),
        expect=S.COMPLETED,
        seen=991,
        confirmed=991,
        policy=TOL_1PCT,
        invoice=inv(1001),
    ),
    case(
        "tolerance:within-tolerance-unconfirmed-waits",
        pay(99, block=UNCONFIRMED_BLOCK),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=99,
        confirmed=0,
        policy=TOL_1PCT,
    ),
    case(
        "tolerance:within-after-expiry-is-not-partially-expired",
        pay(99),
        expect=S.COMPLETED,
        seen=99,
        confirmed=99,
        policy=TOL_1PCT,
        now=AFTER,
    ),
    case(
        "tolerance:exact-for-2**256-1",
        pay(2**256 - 2),
        expect=S.PARTIAL,
        seen=2**256 - 2,
        confirmed=2**256 - 2,
        invoice=inv(2**256 - 1),
    ),
    # --- each status -----------------------------------------------------------------------------
    case("status:pending-nothing-before-expiry", expect=S.PENDING, seen=0, confirmed=0),
    case("status:partial", pay(40), expect=S.PARTIAL, seen=40, confirmed=40),
    case("status:partial-unconfirmed", pay(40, block=UNCONFIRMED_BLOCK), expect=S.PARTIAL, seen=40, confirmed=0),
    case(
        "status:waiting",
        pay(100, block=UNCONFIRMED_BLOCK),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
    ),
    case(
        "status:waiting-never-expires",
        pay(100, block=UNCONFIRMED_BLOCK),
        expect=S.WAITING_FOR_CONFIRMATIONS,
        seen=100,
        confirmed=0,
        now=AFTER + timedelta(days=365),
        invoice=inv(status=S.WAITING_FOR_CONFIRMATIONS),
    ),
    case("status:partially-expired", pay(40), expect=S.PARTIALLY_EXPIRED, seen=40, confirmed=40, now=AFTER),
    case(
        "status:partially-expired-unconfirmed",
        pay(40, block=UNCONFIRMED_BLOCK),
        expect=S.PARTIALLY_EXPIRED,
        seen=40,
        confirmed=0,
        now=AFTER,
    ),
    case("status:expired", expect=S.EXPIRED, seen=0, confirmed=0, now=AFTER),
    case("status:expired-at-the-expiry-instant", expect=S.EXPIRED, seen=0, confirmed=0, now=EXPIRES),
    case(
        "status:pending-one-microsecond-before",
        expect=S.PENDING,
        seen=0,
        confirmed=0,
        now=EXPIRES - timedelta(microseconds=1),
    ),
    case("status:completed-exact-no-overpaid", pay(100), expect=S.COMPLETED, seen=100, confirmed=100),
    case(
        "status:completed-overpaid",
        pay(100),
        pay(1),
        expect=S.COMPLETED,
        seen=101,
        confirmed=101,
        flags=[Flag.OVERPAID],
    ),
    case(
        "status:overpaid-judged-on-confirmed-not-seen",
        pay(100),
        pay(50, block=UNCONFIRMED_BLOCK),
        expect=S.COMPLETED,
        seen=150,
        confirmed=100,
    ),
    # --- terminal states -------------------------------------------------------------------------
    case(
        "terminal:cancelled-ignores-full-payment",
        pay(100),
        expect=S.CANCELLED,
        seen=100,
        confirmed=100,
        invoice=inv(status=S.CANCELLED),
    ),
    case(
        "terminal:cancelled-stays-after-expiry",
        expect=S.CANCELLED,
        seen=0,
        confirmed=0,
        now=AFTER,
        invoice=inv(status=S.CANCELLED),
    ),
    case(
        "terminal:completed-marked-paid-without-payments",
        expect=S.COMPLETED,
        seen=0,
        confirmed=0,
        now=AFTER,
        invoice=inv(status=S.COMPLETED, flags=frozenset({Flag.MARKED_PAID.value})),
        flags=[Flag.MARKED_PAID],
    ),
    case(
        "terminal:completed-reorged-keeps-status-sets-reverted",
        pay(100, orphaned=True),
        expect=S.COMPLETED,
        seen=0,
        confirmed=0,
        now=AFTER,
        invoice=inv(status=S.COMPLETED),
        flags=[Flag.REVERTED],
    ),
    case(
        "terminal:completed-later-overpayment-flags-overpaid",
        pay(100),
        pay(5),
        expect=S.COMPLETED,
        seen=105,
        confirmed=105,
        invoice=inv(status=S.COMPLETED),
        flags=[Flag.OVERPAID],
    ),
    # --- reorg removal moves the status back -----------------------------------------------------
    case(
        "reorg:waiting-back-to-pending",
        pay(100, block=UNCONFIRMED_BLOCK, orphaned=True),
        expect=S.PENDING,
        seen=0,
        confirmed=0,
        invoice=inv(status=S.WAITING_FOR_CONFIRMATIONS),
        flags=[Flag.REVERTED],
    ),
    case(
        "reorg:waiting-back-to-partial",
        pay(40),
        pay(60, block=UNCONFIRMED_BLOCK, orphaned=True),
        expect=S.PARTIAL,
        seen=40,
        confirmed=40,
        invoice=inv(status=S.WAITING_FOR_CONFIRMATIONS),
        flags=[Flag.REVERTED],
    ),
    case(
        "reorg:waiting-after-expiry-back-to-expired",
        pay(100, block=UNCONFIRMED_BLOCK, orphaned=True),
        expect=S.EXPIRED,
        seen=0,
        confirmed=0,
        now=AFTER,
        invoice=inv(status=S.WAITING_FOR_CONFIRMATIONS),
        flags=[Flag.REVERTED],
    ),
    case(
        "reorg:partially-expired-back-to-expired",
        pay(40, orphaned=True),
        expect=S.EXPIRED,
        seen=0,
        confirmed=0,
        now=AFTER,
        invoice=inv(status=S.PARTIALLY_EXPIRED),
        flags=[Flag.REVERTED],
    ),
    case(
        "reorg:remined-copy-counts-once",
        pay(100, block=UNCONFIRMED_BLOCK, orphaned=True),
        pay(100, block=CONFIRMED_BLOCK),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        invoice=inv(status=S.WAITING_FOR_CONFIRMATIONS),
        flags=[Flag.REVERTED],
    ),
    case(
        "flags:existing-flags-are-kept",
        expect=S.PENDING,
        seen=0,
        confirmed=0,
        invoice=inv(flags=frozenset({Flag.PAID_LATE.value, Flag.OVERPAID.value})),
        flags=[Flag.PAID_LATE, Flag.OVERPAID],
    ),
    case(
        "flags:reverted-clears-when-no-payment-is-orphaned",
        pay(100, block=CONFIRMED_BLOCK),
        expect=S.COMPLETED,
        seen=100,
        confirmed=100,
        invoice=inv(status=S.COMPLETED, flags=frozenset({Flag.REVERTED.value})),
        flags=[],
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_evaluate_rule(c: Case) -> None:
    decision = evaluate(c.invoice, list(c.payments), c.now, c.heights, c.policy)
    assert decision.status is c.expect, decision.reason
    assert (decision.seen, decision.confirmed) == (c.seen, c.confirmed)
    assert decision.pending == c.seen - c.confirmed
    assert decision.flags == c.flags
    assert decision.due == amount_due(c.invoice.amount, c.policy.underpaid_tolerance)


@pytest.mark.parametrize(
    ("amount", "tolerance", "due"),
    [
        pytest.param(100, "0", 100, id="no-tolerance"),
        pytest.param(100, "0.01", 99, id="1pct-exact"),
        pytest.param(1001, "0.01", 991, id="1pct-rounds-up"),
        pytest.param(1, "0.5", 1, id="never-below-one"),
        pytest.param(3, "0.999", 1, id="tiny-due-is-one"),
        pytest.param(25_500_000, "0.005", 25_372_500, id="usdt-half-pct"),
        pytest.param(10**30 + 1, "0", 10**30 + 1, id="beyond-28-digits-exact"),
        pytest.param(2**256 - 1, "0", 2**256 - 1, id="uint256-max"),
        pytest.param(2**256 - 1, "0.1", 2**256 - 1 - (2**256 - 1) // 10, id="uint256-max-10pct"),
    ],
)
def test_amount_due(amount: int, tolerance: str, due: int) -> None:
    assert amount_due(amount, Decimal(tolerance)) == due


@pytest.mark.parametrize("tolerance", ["-0.01", "1", "1.5"], ids=["negative", "one", "above-one"])
def test_amount_due_rejects_tolerance_out_of_range(tolerance: str) -> None:
    with pytest.raises(ValueError, match="underpaid_tolerance"):
        amount_due(100, Decimal(tolerance))


@pytest.mark.parametrize(
    ("block", "required", "heights", "expected"),
    [
        pytest.param(98, 3, Heights(100), True, id="tip-block+1==required"),
        pytest.param(99, 3, Heights(100), False, id="one-short"),
        pytest.param(100, 1, Heights(100), True, id="one-conf-at-tip"),
        pytest.param(101, 1, Heights(100), False, id="above-tip"),
        pytest.param(99, 3, Heights(100, final=99), True, id="finalized-overrides"),
        pytest.param(100, 3, Heights(100, final=99), False, id="above-finalized-and-short"),
        pytest.param(1, 0, Heights(10**6), False, id="finality-only-no-final"),
        pytest.param(5, 0, Heights(10, final=5), True, id="finality-only-at-final"),
        pytest.param(6, 0, Heights(10**6, final=5), False, id="finality-only-above-final"),
    ],
)
def test_is_confirmed(block: int, required: int, heights: Heights, expected: bool) -> None:
    assert is_confirmed(block, required, heights) is expected


def test_confirmations_count_includes_own_block_and_floor_zero() -> None:
    assert confirmations(98, Heights(100)) == 3
    assert confirmations(100, Heights(100)) == 1
    assert confirmations(101, Heights(100)) == 0


def test_reorg_sequence_waiting_pending_then_remined_completed() -> None:
    """The same payment walks WAITING -> (orphaned) PENDING -> (re-mined, confirmed) COMPLETED."""
    p = pay(100, block=UNCONFIRMED_BLOCK)
    first = evaluate(inv(), [p], BEFORE, Heights(TIP), Policy())
    assert first.status is S.WAITING_FOR_CONFIRMATIONS
    gone = evaluate(inv(status=first.status), [replace(p, orphaned=True)], BEFORE, Heights(TIP), Policy())
    assert gone.status is S.PENDING and Flag.REVERTED in gone.flags
    back = evaluate(
        inv(status=gone.status, flags=gone.flags), [replace(p, block_number=97)], BEFORE, Heights(TIP), Policy()
    )
    assert back.status is S.COMPLETED and back.flags == frozenset()  # re-mined: nothing is off the chain


# --- change_events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "late", "reverted", "expected"),
    [
        pytest.param(S.PENDING, S.PENDING, (), 0, [], id="no-change-no-event"),
        pytest.param(S.PENDING, S.PARTIAL, (False,), 0, ["invoice.payment_received", "invoice.partial"], id="partial"),
        pytest.param(
            S.PENDING,
            S.WAITING_FOR_CONFIRMATIONS,
            (False,),
            0,
            ["invoice.payment_received", "invoice.waiting_for_confirmations"],
            id="waiting",
        ),
        pytest.param(S.WAITING_FOR_CONFIRMATIONS, S.COMPLETED, (), 0, ["invoice.completed"], id="confirmed"),
        pytest.param(
            S.PENDING,
            S.COMPLETED,
            (False, False),
            0,
            ["invoice.payment_received", "invoice.payment_received", "invoice.completed"],
            id="two-payments-complete",
        ),
        pytest.param(S.PENDING, S.EXPIRED, (), 0, ["invoice.expired"], id="expired"),
        pytest.param(S.PARTIAL, S.PARTIALLY_EXPIRED, (), 0, ["invoice.partially_expired"], id="partially-expired"),
        pytest.param(S.EXPIRED, S.EXPIRED, (True,), 0, ["invoice.payment_late"], id="late-payment-no-status-move"),
        pytest.param(
            S.EXPIRED,
            S.COMPLETED,
            (True,),
            0,
            ["invoice.payment_late", "invoice.completed"],
            id="late-accepted",
        ),
        pytest.param(
            S.WAITING_FOR_CONFIRMATIONS, S.PENDING, (), 1, ["invoice.payment_reverted"], id="reorg-back-to-pending"
        ),
        pytest.param(S.COMPLETED, S.COMPLETED, (), 2, ["invoice.payment_reverted"], id="reorg-of-completed"),
        pytest.param(
            S.WAITING_FOR_CONFIRMATIONS,
            S.PARTIAL,
            (),
            1,
            ["invoice.payment_reverted", "invoice.partial"],
            id="reorg-back-to-partial",
        ),
        pytest.param(S.PENDING, S.CANCELLED, (), 0, ["invoice.cancelled"], id="cancelled"),
    ],
)
def test_change_events(
    before: InvoiceStatus, after: InvoiceStatus, late: tuple[bool, ...], reverted: int, expected: list[str]
) -> None:
    assert change_events(before, after, new_payments_late=late, reverted=reverted) == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(S.COMPLETED, S.COMPLETED, ["invoice.payment_restored"], id="remined-completed"),
        pytest.param(
            S.PENDING,
            S.WAITING_FOR_CONFIRMATIONS,
            ["invoice.payment_restored", "invoice.waiting_for_confirmations"],
            id="remined-back-to-waiting",
        ),
    ],
)
def test_change_events_of_a_restored_payment(before: InvoiceStatus, after: InvoiceStatus, expected: list[str]) -> None:
    assert change_events(before, after, restored=1) == expected
    assert "invoice.payment_restored" in EVENT_TYPES


def test_every_status_but_pending_has_an_event() -> None:
    assert set(STATUS_EVENTS) == set(InvoiceStatus) - {S.PENDING}
