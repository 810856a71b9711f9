"""The chain-neutral value every adapter returns for one incoming transfer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

NATIVE = "native"
NATIVE_INDEX = -1


def address_key(address: str) -> str:
    """The form addresses are compared in: lowercase hex for EVM, base58 as-is for Tron."""
    return address.lower() if address[:2] in ("0x", "0X") else address


@dataclass(frozen=True, slots=True)
class Transfer:
    """One value transfer seen on chain.

    ``asset_key`` is ``"native"`` or the token contract (lowercase hex for EVM, base58 for Tron).
    ``log_index`` is the event's index in its block (or transaction) for tokens and
    ``NATIVE_INDEX`` (-1) for a native-coin transfer. ``success`` is False for failed transactions;
    adapters still report them so that callers can decide, and matching ignores them.
    """

    network: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    block_time: datetime
    from_address: str
    to_address: str
    asset_key: str
    amount: int
    memo: str | None = None
    success: bool = True

    @property
    def to_key(self) -> str:
        return address_key(self.to_address)
