"""The chain-neutral value every adapter returns for one incoming transfer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

NATIVE = "native"
NATIVE_INDEX = -1
#: ``block_number`` of a transfer seen in the mempool (no block yet)
MEMPOOL_BLOCK = -1


def address_key(address: str) -> str:
    """The form addresses are compared in: lowercase hex for EVM, base58 as-is for Tron."""
    return address.lower() if address[:2] in ("0x", "0X") else address


@dataclass(frozen=True, slots=True)
class Transfer:
    """One value transfer seen on chain.

    ``asset_key`` is ``"native"`` or the token contract (lowercase hex for EVM, base58 for Tron).
    ``log_index`` is the event's index as the chain numbers it (in its block on EVM, in its
    transaction on Tron) for tokens and ``NATIVE_INDEX`` (-1) for a native-coin transfer.
    ``tx_position`` is the event's index within its transaction where that differs from
    ``log_index`` (EVM tokens); ``position`` is the one to use. A transfer's identity is
    (network, tx hash, position): a transaction re-mined in another block keeps it, while an EVM
    log's block-wide index changes. ``success`` is False for failed transactions; adapters still
    report them so that callers can decide, and matching ignores them.

    ``mempool``: seen in the node's pool of unconfirmed transactions, in no block yet
    (``block_number`` -1, ``block_hash`` "", ``block_time`` the time it was seen);
    ``replaceable``: the transaction signals that it may be replaced (BIP125);
    ``maturity``: confirmations needed before it counts at all (coinbase outputs), 0 for most.
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
    tx_position: int | None = None
    mempool: bool = False
    replaceable: bool = False
    maturity: int = 0

    @property
    def position(self) -> int:
        """The transfer's index within its transaction (-1: the transaction's native value)."""
        return self.log_index if self.tx_position is None else self.tx_position

    @property
    def to_key(self) -> str:
        return address_key(self.to_address)
