"""A scripted in-memory chain behind the real ``ChainAdapter`` Protocol, for model-based tests.

The test decides everything a node would: which transactions are sent, when blocks are mined and
with which timestamps, and how a reorg replaces the top blocks (each removed transaction dropped
or re-mined in a given replacement block). The scanner, the rescans and the ledger read it through
the same four methods they use on anvil or the Tron node, and get the same frozen ``Transfer`` and
``BlockRef`` values the real adapters return.

Transfer identity: ``index_mode="tx"`` (the Tron adapter's convention) numbers token transfers by
their position inside the transaction, so a re-mined transfer keeps its ``log_index``;
``index_mode="block"`` (the EVM adapter's convention) numbers them across the block, so a
re-mined transfer gets a new one; like the EVM adapter (which reads it from the receipt), it then
also reports the transfer's index in its transaction as ``tx_position``, the identity that survives
re-mining. Native transfers always carry ``NATIVE_INDEX``.

Every block ever made is kept by hash (``by_hash``), canonical or not, so a test can look at what
a scanner stored for a height that has since been replaced.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from paywatch.chains.base import BlockRef, ScannedRange, WatchPredicate
from paywatch.config import NetworkConfig
from paywatch.domain.status import Heights
from paywatch.domain.transfer import NATIVE, NATIVE_INDEX, Transfer, address_key
from paywatch.errors import ChainError

IndexMode = Literal["tx", "block"]


@dataclass(frozen=True, slots=True)
class Leg:
    """One value movement inside a transaction: native coin or a token (by contract key)."""

    to_address: str
    asset_key: str
    amount: int


@dataclass(frozen=True, slots=True)
class ScriptedTx:
    """A transaction: one native leg, or one or more token legs (positions 0, 1, ...)."""

    tx_hash: str
    from_address: str
    legs: tuple[Leg, ...]
    memo: str | None = None
    success: bool = True
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScriptedBlock:
    """One block version: its identity and its transactions in order."""

    number: int
    hash: str
    parent_hash: str
    timestamp: datetime
    txs: tuple[ScriptedTx, ...] = ()

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.number, self.hash, self.parent_hash, self.timestamp)


@dataclass(frozen=True, slots=True)
class PlacedTransfer:
    """A transfer as the adapter reports it, with its position inside the transaction."""

    transfer: Transfer
    position: int

    @property
    def identity(self) -> tuple[str, int]:
        """The transfer's chain-wide identity: tx hash plus position in the transaction."""
        return (self.transfer.tx_hash, self.position)


@dataclass
class ReorgResult:
    """What a reorg did: the removed blocks, and where each removed transaction went (None: dropped)."""

    removed: list[ScriptedBlock]
    added: list[ScriptedBlock]
    placement: dict[str, int | None] = field(default_factory=dict)


class ScriptedChain:
    """An in-memory chain and its ``ChainAdapter`` face (heights, block_ref, fetch_range, transaction_transfers).

    ``configured`` holds the asset keys the network's configuration knows (``"native"`` and token
    contracts in ``address_key`` form); like the real adapters, transfers of other tokens are never
    reported. ``final_lag`` gives a finality signal at ``tip - final_lag`` (None: no signal).
    """

    def __init__(
        self,
        network: str,
        genesis_time: datetime,
        *,
        configured: Iterable[str],
        index_mode: IndexMode = "tx",
        final_lag: int | None = None,
    ) -> None:
        self.network = network
        self.index_mode: IndexMode = index_mode
        self.final_lag = final_lag
        self.configured = frozenset(configured)
        self._ids = itertools.count(1)
        genesis = ScriptedBlock(0, self._hash("block"), "0x" + "00" * 32, genesis_time)
        self.blocks: list[ScriptedBlock] = [genesis]
        self.by_hash: dict[str, ScriptedBlock] = {genesis.hash: genesis}
        self.mempool: list[ScriptedTx] = []
        self.reads = 0

    @classmethod
    def for_network(cls, network: NetworkConfig, genesis_time: datetime, **kw: object) -> ScriptedChain:
        """A chain whose configured assets are ``network``'s (native plus token contracts)."""
        keys = {NATIVE if a.native else address_key(a.contract or "") for a in network.assets.values()}
        return cls(network.name, genesis_time, configured=keys, **kw)  # type: ignore[arg-type]

    # --- scripting --------------------------------------------------------------------------------

    def _hash(self, kind: str) -> str:
        return "0x" + hashlib.sha256(f"{self.network}:{kind}:{next(self._ids)}".encode()).hexdigest()

    @property
    def tip(self) -> int:
        return self.blocks[-1].number

    @property
    def head(self) -> ScriptedBlock:
        return self.blocks[-1]

    def send(
        self,
        legs: Iterable[Leg],
        *,
        memo: str | None = None,
        success: bool = True,
        sender: str = "TPayer1111111111111111111111111111",
        sent_at: datetime | None = None,
    ) -> ScriptedTx:
        """Put a transaction in the mempool; the next mined block includes it."""
        tx = ScriptedTx(self._hash("tx"), sender, tuple(legs), memo, success, sent_at)
        if not tx.legs:
            raise ValueError("a transaction needs at least one leg")
        if len(tx.legs) > 1 and any(leg.asset_key == NATIVE for leg in tx.legs):
            raise ValueError("a native transfer is the only leg of its transaction")
        self.mempool.append(tx)
        return tx

    def mine(self, timestamp: datetime, count: int = 1) -> list[ScriptedBlock]:
        """Mine ``count`` blocks at ``timestamp``; the first one takes the whole mempool."""
        made = []
        for i in range(count):
            txs, self.mempool = (tuple(self.mempool), []) if i == 0 else ((), self.mempool)
            made.append(self._append(timestamp, txs))
        return made

    def _append(self, timestamp: datetime, txs: tuple[ScriptedTx, ...]) -> ScriptedBlock:
        parent = self.blocks[-1]
        if timestamp < parent.timestamp:
            raise ValueError("block timestamps never go backwards")
        block = ScriptedBlock(parent.number + 1, self._hash("block"), parent.hash, timestamp, txs)
        self.blocks.append(block)
        self.by_hash[block.hash] = block
        return block

    def reorg(
        self, depth: int, placement: Mapping[str, int | None], *, extra: int = 0, extra_time: datetime | None = None
    ) -> ReorgResult:
        """Replace the top ``depth`` blocks with ``depth + extra`` new ones.

        ``placement`` maps each removed transaction's hash to the offset (0-based, among the new
        blocks) of the block that re-mines it, or None to drop it. A transaction may only be
        re-mined at its old height or above (a replacement block keeps the timestamp of the block
        it replaces; extra blocks take ``extra_time``). Unlisted transactions are dropped.
        """
        if not 1 <= depth <= self.tip:
            raise ValueError(f"reorg depth {depth} with tip {self.tip} (the genesis block stays)")
        removed = self.blocks[-depth:]
        del self.blocks[-depth:]
        base = removed[0].number
        times = [b.timestamp for b in removed]
        times += [max(extra_time or times[-1], times[-1])] * extra
        slots: list[list[ScriptedTx]] = [[] for _ in times]
        result = ReorgResult(removed=removed, added=[])
        for block in removed:
            for tx in block.txs:
                offset = placement.get(tx.tx_hash)
                if offset is not None and not (block.number - base <= offset < len(times)):
                    raise ValueError(f"tx {tx.tx_hash} cannot be re-mined at offset {offset}")
                result.placement[tx.tx_hash] = offset
                if offset is not None:
                    slots[offset].append(tx)
        for when, txs in zip(times, slots, strict=True):
            result.added.append(self._append(when, tuple(txs)))
        return result

    # --- reading (also used by the model) -------------------------------------------------------

    def canonical(self, number: int) -> ScriptedBlock:
        if not 0 <= number <= self.tip:
            raise ChainError(f"{self.network}: block {number} is beyond the tip {self.tip}")
        return self.blocks[number]

    def placed_transfers(self, block: ScriptedBlock) -> list[PlacedTransfer]:
        """Every configured-asset transfer of ``block`` (watched or not, failed or not)."""
        found: list[PlacedTransfer] = []
        block_wide = 0
        for tx in block.txs:
            for position, leg in enumerate(tx.legs):
                native = leg.asset_key == NATIVE
                if native:
                    log_index = NATIVE_INDEX
                elif self.index_mode == "tx":
                    log_index = position
                else:
                    log_index = block_wide
                if not native:
                    block_wide += 1
                if leg.asset_key not in self.configured:
                    continue
                transfer = Transfer(
                    network=self.network,
                    tx_hash=tx.tx_hash,
                    log_index=log_index,
                    block_number=block.number,
                    block_hash=block.hash,
                    block_time=block.timestamp,
                    from_address=tx.from_address,
                    to_address=leg.to_address,
                    asset_key=leg.asset_key,
                    amount=leg.amount,
                    memo=tx.memo,
                    success=tx.success,
                    # the EVM adapter reads a token log's index in its transaction from the receipt
                    tx_position=position if self.index_mode == "block" and not native else None,
                )
                found.append(PlacedTransfer(transfer, position))
        return found

    def find_tx(self, tx_hash: str) -> ScriptedBlock | None:
        """The canonical block holding ``tx_hash``, if any."""
        for block in reversed(self.blocks):
            if any(tx.tx_hash == tx_hash for tx in block.txs):
                return block
        return None

    # --- the ChainAdapter Protocol ------------------------------------------------------------

    def heights(self) -> Heights:
        final = None if self.final_lag is None else max(0, self.tip - self.final_lag)
        return Heights(self.tip, final)

    def block_ref(self, number: int) -> BlockRef:
        return self.canonical(number).ref

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        if start > end or end > self.tip or start < 0:
            raise ChainError(f"{self.network}: cannot read blocks {start}..{end} (tip {self.tip})")
        self.reads += 1
        blocks = self.blocks[start : end + 1]
        transfers = [
            p.transfer for b in blocks for p in self.placed_transfers(b) if watched(address_key(p.transfer.to_address))
        ]
        return ScannedRange(blocks=tuple(b.ref for b in blocks), transfers=tuple(transfers))

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        block = self.find_tx(tx_hash)
        if block is None:
            raise ChainError(f"{self.network}: transaction {tx_hash} not found")
        transfers = [
            p.transfer
            for p in self.placed_transfers(block)
            if p.transfer.tx_hash == tx_hash and watched(address_key(p.transfer.to_address))
        ]
        return ScannedRange(blocks=(block.ref,), transfers=tuple(transfers))
