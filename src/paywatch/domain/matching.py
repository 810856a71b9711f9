"""Match transfers to invoices: by per-invoice address, shared address + memo, or unique amount.

The :class:`WatchIndex` is built from the open invoices and consulted for every transfer, so it is
kept flat: one dict for per-invoice addresses, one small record per shared address.
"""

from __future__ import annotations

from array import array
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
    DUST = "dust"
    INVOICE_CANCELLED = "invoice_cancelled"


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


def normalize_memo(memo: str) -> str:
    """A memo as matching compares it: surrounding whitespace dropped, upper case.

    Issued memos use an upper-case alphabet, so a wallet that lower-cases or pads them still matches.
    """
    return memo.strip().upper()


@dataclass(slots=True)
class _Shared:
    strategy: Strategy | None = None  # None: a network-wide shared address, used by both strategies
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
    """Addresses to watch, and which invoice a transfer to each belongs to.

    Built for a million watched addresses: a per-invoice address is one dict entry whose key is
    the address's 20 raw bytes (EVM; other families keep their string form) and whose value is a
    row number into flat arrays (deadline, asset, invoice id packed to 10 bytes when it has the
    usual ``inv_<20 hex>`` form). :class:`Watch` objects are made only for hits.

    ``min_amounts`` maps an asset key to its smallest transfer in base units: a smaller transfer to
    a watched address is dust, returned as unmatched (reason ``dust``, the invoice it would have
    gone to as hint) so that it never changes an invoice.
    """

    def __init__(self, min_amounts: dict[str, int] | None = None) -> None:
        self._min_amounts = dict(min_amounts or {})
        self._rows: dict[bytes | str, int] = {}
        self._deadlines = array("q")
        self._asset_of = array("H")
        self._assets: list[str] = []
        self._asset_ids: dict[str, int] = {}
        self._ids = bytearray()
        self._odd_ids: dict[int, str] = {}
        self._shared: dict[bytes | str, _Shared] = {}
        self._amount_of: dict[str, tuple[bytes | str, tuple[str, int]]] = {}

    def __len__(self) -> int:
        return len(self._rows) + len(self._shared)

    def add_address(self, address: str, watch: Watch) -> None:
        """Watch a per-invoice address."""
        self.add_address_entry(address, watch.invoice_id, watch.asset_key, watch.deadline)

    def add_address_entry(self, address: str, invoice_id: str, asset_key: str, deadline: int) -> None:
        """:meth:`add_address` without a :class:`Watch` (what a loader of a million rows calls).

        Adding an address again replaces its entry (the old row stays in the arrays, unused).
        """
        row = len(self._deadlines)
        self._deadlines.append(deadline)
        asset = self._asset_ids.get(asset_key)
        if asset is None:
            asset = self._asset_ids[asset_key] = len(self._assets)
            self._assets.append(asset_key)
        self._asset_of.append(asset)
        packed = _pack_id(invoice_id)
        if packed is None:
            self._ids += bytes(_ID_BYTES)
            self._odd_ids[row] = invoice_id
        else:
            self._ids += packed
        self._rows[_key(address)] = row

    def add_shared(self, address: str, *, strategy: Strategy | None = None) -> None:
        """Watch a shared deposit address even when no invoice is open on it.

        ``strategy``: the one strategy a store's own shared address serves. A transfer without a
        memo to a MEMO address is never tried as a unique amount.
        """
        shared = self._shared.setdefault(_key(address), _Shared())
        if strategy is not None:
            shared.strategy = strategy

    def add_memo(self, address: str, memo: str, watch: Watch) -> None:
        """Watch ``memo`` on a shared address (compared after :func:`normalize_memo`)."""
        self._shared.setdefault(_key(address), _Shared()).memos[normalize_memo(memo)] = watch

    def add_amount(self, address: str, watch: Watch) -> None:
        """Watch an exact (asset, amount) on a shared address."""
        self.release_amount(watch.invoice_id)
        key = _key(address)
        self._shared.setdefault(key, _Shared()).amounts[(watch.asset_key, watch.amount)] = watch
        self._amount_of[watch.invoice_id] = (key, (watch.asset_key, watch.amount))

    def release_amount(self, invoice_id: str) -> None:
        """Stop watching the unique amount of ``invoice_id`` (released; its address stays watched)."""
        held = self._amount_of.pop(invoice_id, None)
        if held is not None:
            amounts = self._shared[held[0]].amounts
            watch = amounts.get(held[1])
            if watch is not None and watch.invoice_id == invoice_id:
                del amounts[held[1]]

    def is_watched(self, address: str) -> bool:
        key = _key(address)
        return key in self._rows or key in self._shared

    def watched_addresses(self) -> set[str]:
        return {_unkey(key) for key in self._rows} | {_unkey(key) for key in self._shared}

    def _watch(self, row: int) -> Watch:
        invoice_id = self._odd_ids.get(row)
        if invoice_id is None:
            invoice_id = _ID_PREFIX + self._ids[row * _ID_BYTES : (row + 1) * _ID_BYTES].hex()
        return Watch(invoice_id, self._assets[self._asset_of[row]], self._deadlines[row])

    def match(self, transfer: Transfer) -> Match | Unmatched | None:
        """Attribute one transfer; ``None`` when its recipient is not watched at all."""
        result = self._attribute(transfer)
        if result is not None and transfer.amount < self._min_amounts.get(transfer.asset_key, 1):
            return Unmatched(transfer, UnmatchedReason.DUST, result.invoice_id)
        return result

    def _attribute(self, transfer: Transfer) -> Match | Unmatched | None:
        key = _key(transfer.to_address)
        row = self._rows.get(key)
        if row is not None:
            return _judge(transfer, self._watch(row))
        shared = self._shared.get(key)
        if shared is None:
            return None
        memo = normalize_memo(transfer.memo) if transfer.memo else ""
        if memo:  # a transfer that carries a memo is matched by its memo or not at all
            memo_watch = shared.memos.get(memo)
            if memo_watch is not None:
                return _judge(transfer, memo_watch)
            return Unmatched(transfer, UnmatchedReason.UNKNOWN_MEMO)
        if shared.strategy is Strategy.MEMO:
            return Unmatched(transfer, UnmatchedReason.NO_MEMO)
        amount_watch = shared.amounts.get((transfer.asset_key, transfer.amount))
        if amount_watch is not None:
            return _judge(transfer, amount_watch)
        if shared.memos:
            return Unmatched(transfer, UnmatchedReason.NO_MEMO)
        return Unmatched(transfer, UnmatchedReason.NO_AMOUNT_MATCH)

    def match_all(self, transfers: list[Transfer]) -> tuple[list[Match], list[Unmatched]]:
        """Split transfers into matches and unmatched; failed and zero-value ones are dropped here."""
        matches: list[Match] = []
        unmatched: list[Unmatched] = []
        rows, shared = self._rows, self._shared
        for transfer in transfers:
            if not transfer.success or transfer.amount <= 0:
                continue
            key = _key(transfer.to_address)
            if key not in rows and key not in shared:
                continue
            result = self.match(transfer)
            if isinstance(result, Match):
                matches.append(result)
            elif isinstance(result, Unmatched):
                unmatched.append(result)
        return matches, unmatched


_ID_PREFIX = "inv_"
_ID_BYTES = 10
_PREFIX_LENGTH = len(_ID_PREFIX)
_ID_LENGTH = _PREFIX_LENGTH + 2 * _ID_BYTES


def _pack_id(invoice_id: str) -> bytes | None:
    """``inv_<20 lowercase hex>`` as its 10 bytes; None for any other form (kept as a string)."""
    if len(invoice_id) == _ID_LENGTH and invoice_id.startswith(_ID_PREFIX):
        digits = invoice_id[_PREFIX_LENGTH:]
        try:
            packed = bytes.fromhex(digits)
        except ValueError:
            return None
        # fromhex also reads upper case and skips spaces: only an id it gives back unchanged is packed
        if len(packed) == _ID_BYTES and packed.hex() == digits:
            return packed
    return None


def _key(address: str) -> bytes | str:
    """An EVM address as its 20 bytes (any letter case); anything else as ``address_key``."""
    if len(address) == 42 and address[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(address[2:])
        except ValueError:
            pass
    return address_key(address)


def _unkey(key: bytes | str) -> str:
    return "0x" + key.hex() if isinstance(key, bytes) else key


def _judge(transfer: Transfer, watch: Watch) -> Match | Unmatched:
    if transfer.asset_key != watch.asset_key:
        return Unmatched(transfer, UnmatchedReason.ASSET_MISMATCH, watch.invoice_id)
    if transfer.block_time.timestamp() > watch.deadline:
        return Unmatched(transfer, UnmatchedReason.EXPIRED_BEYOND_LATE_WINDOW, watch.invoice_id)
    return Match(transfer, watch.invoice_id)
