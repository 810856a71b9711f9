"""The one small Protocol every chain family implements, and the values it returns.

Raw web3 or tronpy objects never leave ``paywatch.chains``; adapters return these frozen values.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from paywatch.domain.status import Heights
from paywatch.domain.transfer import NATIVE, NATIVE_INDEX, Transfer

__all__ = [
    "NATIVE",
    "NATIVE_INDEX",
    "BlockRef",
    "ChainAdapter",
    "Heights",
    "MempoolSource",
    "MempoolView",
    "ScannedRange",
    "Transfer",
]

#: Tells an adapter whether an address (in ``address_key`` form) is watched.
WatchPredicate = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block's identity: number, hash, parent hash and timestamp."""

    number: int
    hash: str
    parent_hash: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class ScannedRange:
    """Everything read for an inclusive block range: every block's ref and the transfers in it.

    ``transfers`` holds all configured-token transfers in the range and the native transfers
    whose recipient is watched; a native transfer's ``success`` comes from its receipt.
    """

    blocks: tuple[BlockRef, ...]
    transfers: tuple[Transfer, ...]


class ChainAdapter(Protocol):
    """Read-only access to one network. Every method raises ChainError (or its retryable child)."""

    network: str

    def heights(self) -> Heights:
        """The tip, and the finalized/solidified height where the network uses one."""
        ...

    def block_ref(self, number: int) -> BlockRef:
        """The canonical block at ``number`` (used to find the common ancestor after a reorg)."""
        ...

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        """Blocks ``start..end`` inclusive and their transfers; all or nothing."""
        ...

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        """The transfers of one transaction, with its block's ref (for ``paywatch rescan-tx``)."""
        ...


@dataclass(frozen=True, slots=True)
class MempoolView:
    """One look at a node's mempool.

    ``txids``: every transaction in the pool; ``read``: the ones read this time (new since the
    caller's ``known`` set, at most ``limit``); ``transfers``: what those pay to watched addresses
    (``mempool=True``); ``best_block``: the node's best block hash, read right after the pool, so
    that the caller can tell whether a transaction missing from the pool may be in a newer block.
    """

    txids: frozenset[str]
    read: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    best_block: str


@runtime_checkable
class MempoolSource(Protocol):
    """An adapter whose node has a mempool worth watching (the utxo family)."""

    def mempool_view(self, known: Set[str], watched: WatchPredicate, seen_at: datetime, limit: int) -> MempoolView:
        """The pool's txids, and the transfers of at most ``limit`` transactions not in ``known``."""
        ...
