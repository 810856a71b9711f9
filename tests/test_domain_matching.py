"""matching: transfers to watched addresses are attributed by address, memo or unique amount."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.domain.matching import Match, Strategy, Unmatched, UnmatchedReason, Watch, WatchIndex
from paywatch.domain.transfer import NATIVE, Transfer, address_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = int((T0 + timedelta(hours=2)).timestamp())
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
PER_INVOICE = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
SHARED_MEMO = "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
SHARED_AMOUNT = "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0"
STRANGER = "0x1111111111111111111111111111111111111111"
TRON_USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def transfer(to: str, amount: int = 100, *, asset: str = USDT, memo: str | None = None, **kw: object) -> Transfer:
    base = Transfer(
        network="ethereum",
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        block_number=10,
        block_hash="0x" + "cd" * 32,
        block_time=T0 + timedelta(minutes=5),
        from_address=STRANGER,
        to_address=to,
        asset_key=asset,
        amount=amount,
        memo=memo,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def index() -> WatchIndex:
    ix = WatchIndex()
    ix.add_address(PER_INVOICE, Watch("inv_addr", USDT, DEADLINE))
    ix.add_memo(SHARED_MEMO, "MEMO123456", Watch("inv_memo", TRON_USDT, DEADLINE))
    ix.add_amount(SHARED_AMOUNT, Watch("inv_amt", USDT, DEADLINE, 25_500_001))
    ix.add_amount(SHARED_AMOUNT, Watch("inv_amt2", USDT, DEADLINE, 25_500_002))
    return ix


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        pytest.param(transfer(PER_INVOICE), "inv_addr", id="address"),
        pytest.param(transfer(PER_INVOICE.lower()), "inv_addr", id="address-case-insensitive-evm"),
        pytest.param(transfer(PER_INVOICE, 1), "inv_addr", id="address-any-amount-partial"),
        pytest.param(transfer(PER_INVOICE, asset=NATIVE), UnmatchedReason.ASSET_MISMATCH, id="address-wrong-asset"),
        pytest.param(
            transfer(PER_INVOICE, block_time=datetime.fromtimestamp(DEADLINE + 1, UTC)),
            UnmatchedReason.EXPIRED_BEYOND_LATE_WINDOW,
            id="address-beyond-late-window",
        ),
        pytest.param(
            transfer(PER_INVOICE, block_time=datetime.fromtimestamp(DEADLINE, UTC)),
            "inv_addr",
            id="address-at-deadline",
        ),
        pytest.param(transfer(SHARED_MEMO, asset=TRON_USDT, memo="MEMO123456"), "inv_memo", id="memo"),
        pytest.param(
            transfer(SHARED_MEMO, asset=TRON_USDT, memo="OTHER"), UnmatchedReason.UNKNOWN_MEMO, id="memo-unknown"
        ),
        pytest.param(transfer(SHARED_MEMO, asset=TRON_USDT), UnmatchedReason.NO_MEMO, id="memo-missing"),
        pytest.param(
            transfer(SHARED_MEMO, asset=NATIVE, memo="MEMO123456"),
            UnmatchedReason.ASSET_MISMATCH,
            id="memo-wrong-asset",
        ),
        pytest.param(
            transfer(SHARED_MEMO.lower(), asset=TRON_USDT, memo="MEMO123456"), None, id="tron-base58-is-exact"
        ),
        pytest.param(transfer(SHARED_AMOUNT, 25_500_001), "inv_amt", id="amount"),
        pytest.param(transfer(SHARED_AMOUNT, 25_500_002), "inv_amt2", id="amount-second"),
        pytest.param(transfer(SHARED_AMOUNT, 25_500_000), UnmatchedReason.NO_AMOUNT_MATCH, id="amount-base-not-unique"),
        pytest.param(transfer(SHARED_AMOUNT, 25_500_003), UnmatchedReason.NO_AMOUNT_MATCH, id="amount-over"),
        pytest.param(
            transfer(SHARED_AMOUNT, 25_500_001, asset=NATIVE), UnmatchedReason.NO_AMOUNT_MATCH, id="amount-other-asset"
        ),
        pytest.param(transfer(STRANGER), None, id="unwatched"),
    ],
)
def test_match(index: WatchIndex, t: Transfer, expected: str | UnmatchedReason | None) -> None:
    result = index.match(t)
    if expected is None:
        assert result is None
    elif isinstance(expected, UnmatchedReason):
        assert isinstance(result, Unmatched) and result.reason is expected
    else:
        assert result == Match(t, expected)


def test_match_all_drops_failed_and_zero_and_unwatched(index: WatchIndex) -> None:
    good = transfer(PER_INVOICE)
    odd = transfer(SHARED_AMOUNT, 7, log_index=1)
    matches, unmatched = index.match_all(
        [
            good,
            transfer(PER_INVOICE, success=False, log_index=2),
            transfer(PER_INVOICE, 0, log_index=3),
            transfer(STRANGER, log_index=4),
            odd,
        ]
    )
    assert matches == [Match(good, "inv_addr")]
    assert unmatched == [Unmatched(odd, UnmatchedReason.NO_AMOUNT_MATCH)]


def test_shared_address_watched_without_open_invoice() -> None:
    ix = WatchIndex()
    ix.add_shared(SHARED_AMOUNT)
    assert ix.is_watched(SHARED_AMOUNT.lower())
    result = ix.match(transfer(SHARED_AMOUNT))
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.NO_AMOUNT_MATCH
    assert ix.watched_addresses() == {address_key(SHARED_AMOUNT)}


def test_address_key_normalises_only_hex() -> None:
    assert address_key("0xABCDEF") == "0xabcdef"
    assert address_key("0XABCDEF") == "0xabcdef"
    assert address_key(SHARED_MEMO) == SHARED_MEMO


@pytest.mark.parametrize("memo", ["memo123456", "Memo123456", "  MEMO123456\n", "\tmemo123456 "])
def test_memo_matches_whatever_the_case_and_surrounding_whitespace(index: WatchIndex, memo: str) -> None:
    """Memo matching was case-sensitive: a wallet that lower-cased the memo lost the payment."""
    t = transfer(SHARED_MEMO, asset=TRON_USDT, memo=memo)
    assert index.match(t) == Match(t, "inv_memo")


def test_issued_memos_survive_normalisation() -> None:
    from paywatch.addresses import MEMO_ALPHABET, new_memo
    from paywatch.domain.matching import normalize_memo

    assert normalize_memo(MEMO_ALPHABET) == MEMO_ALPHABET
    assert not set(MEMO_ALPHABET) & set("01IO")  # nothing a reader confuses with another character
    memos = [new_memo() for _ in range(200)]
    assert all(normalize_memo(m.lower()) == m for m in memos)


def test_a_memo_transfer_never_falls_through_to_amount_matching() -> None:
    """A transfer carrying a memo, or sent to a memo address, used to be tried as a unique amount."""
    ix = WatchIndex()
    ix.add_shared(SHARED_MEMO, strategy=Strategy.MEMO)
    ix.add_memo(SHARED_MEMO, "MEMO123456", Watch("inv_memo", TRON_USDT, DEADLINE))
    ix.add_shared(SHARED_AMOUNT, strategy=Strategy.AMOUNT)
    ix.add_amount(SHARED_AMOUNT, Watch("inv_amt", USDT, DEADLINE, 25_500_001))
    with_memo = transfer(SHARED_AMOUNT, 25_500_001, memo="SOMETHING")
    result = ix.match(with_memo)
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.UNKNOWN_MEMO
    # a memo address with an amount invoice on it (an address used by both strategies before 0004)
    ix.add_amount(SHARED_MEMO, Watch("inv_legacy", TRON_USDT, DEADLINE, 7))
    no_memo = transfer(SHARED_MEMO, 7, asset=TRON_USDT)
    result = ix.match(no_memo)
    assert isinstance(result, Unmatched) and result.reason is UnmatchedReason.NO_MEMO
