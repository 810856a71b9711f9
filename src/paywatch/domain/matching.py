"""Match transfers to invoices: by per-invoice address, shared address + memo, or unique amount.

The :class:`WatchIndex` is built from the open invoices and consulted for every transfer, so it is
kept flat: one dict for per-invoice addresses, one small record per shared address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from paywatch.domain.transfer import Transfer, address_key


class UnmatchedReason(StrEnum):
    """Why a transfer to a watched address was not attributed to an invoice."""

    UNKNOWN_MEMO = "unknown_memo"
    NO_MEMO = "no_memo"
    NO_AMOUNT_MATCH = "no_amount_match"
    ASSET_MISMATCH = "asset_mismatch"
    EXPIRED_BEYOND_LATE_WINDOW = "expired_beyond_late_window"


class Strategy(StrEnum):
    """How an invoice is recognised on chain."""

    ADDRESS = "address"
    MEMO = "memo"
    AMOUNT = "amount"


@dataclass(frozen=True, slots=True)
class Watch:
    """One invoice as matching sees it. ``deadline`` is a unix time: expiry plus the late window."""

    invoice_id: str
    asset_key: str
    deadline: int
    amount: int = 0


@dataclass(slots=True)
class _Shared:
    memos: dict[str, Watch] = field(default_factory=dict)
    amounts: dict[tuple[str, int], Watch] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Match:
    """A transfer attributed to an invoice."""

    transfer: Transfer
    invoice_id: str


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A transfer to a watched address that no invoice claims."""

    transfer: Transfer
    reason: UnmatchedReason
    invoice_id: str | None = None


class WatchIndex:
    """Addresses to watch, and which invoice a transfer to each belongs to."""

    def __init__(self) -> None:
        self._by_address: dict[str, Watch] = {}
        self._shared: dict[str, _Shared] = {}

    def __len__(self) -> int:
        return len(self._by_address) + len(self._shared)

    def add_address(self, address: str, watch: Watch) -> None:
        """Watch a per-invoice address."""
        self._by_address[address_key(address)] = watch

    def add_shared(self, address: str) -> None:
        """Watch a shared deposit address even when no invoice is open on it."""
        self._shared.setdefault(address_key(address), _Shared())

    def add_memo(self, address: str, memo: str, watch: Watch) -> None:
        """Watch ``memo`` on a shared address."""
        self._shared.setdefault(address_key(address), _Shared()).memos[memo] = watch

    def add_amount(self, address: str, watch: Watch) -> None:
        """Watch an exact (asset, amount) on a shared address."""
        self._shared.setdefault(address_key(address), _Shared()).amounts[(watch.asset_key, watch.amount)] = watch

    def is_watched(self, address: str) -> bool:
        key = address_key(address)
        return key in self._by_address or key in self._shared

    def watched_addresses(self) -> set[str]:
        return set(self._by_address) | set(self._shared)

    def match(self, transfer: Transfer) -> Match | Unmatched | None:
        """Attribute one transfer; ``None`` when its recipient is not watched at all."""
        key = transfer.to_key
        watch = self._by_address.get(key)
        if watch is not None:
            return _judge(transfer, watch)
        shared = self._shared.get(key)
        if shared is None:
            return None
        if transfer.memo:
            memo_watch = shared.memos.get(transfer.memo)
            if memo_watch is not None:
                return _judge(transfer, memo_watch)
            if not shared.amounts:
                return Unmatched(transfer, UnmatchedReason.UNKNOWN_MEMO)
        amount_watch = shared.amounts.get((transfer.asset_key, transfer.amount))
        if amount_watch is not None:
            return _judge(transfer, amount_watch)
        if shared.memos and not transfer.memo:
            return Unmatched(transfer, UnmatchedReason.NO_MEMO)
        return Unmatched(transfer, UnmatchedReason.NO_AMOUNT_MATCH)

    def match_all(self, transfers: list[Transfer]) -> tuple[list[Match], list[Unmatched]]:
        """Split transfers into matches and unmatched; failed and zero-value ones are dropped here."""
        matches: list[Match] = []
        unmatched: list[Unmatched] = []
        for transfer in transfers:
            if not transfer.success or transfer.amount <= 0:
                continue
            result = self.match(transfer)
            if isinstance(result, Match):
                matches.append(result)
            elif isinstance(result, Unmatched):
                unmatched.append(result)
        return matches, unmatched


def _judge(transfer: Transfer, watch: Watch) -> Match | Unmatched:
    if transfer.asset_key != watch.asset_key:
        return Unmatched(transfer, UnmatchedReason.ASSET_MISMATCH, watch.invoice_id)
    if transfer.block_time.timestamp() > watch.deadline:
        return Unmatched(transfer, UnmatchedReason.EXPIRED_BEYOND_LATE_WINDOW, watch.invoice_id)
    return Match(transfer, watch.invoice_id)
