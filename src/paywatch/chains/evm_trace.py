"""Internal native transfers: coin sent by contracts (``internal_transfers: trace``).

A block body shows only the coin a transaction sends itself. Coin that a contract sends on (a
forwarder, a batch payout, a Safe's ``execTransaction``) is visible only in the call trace. This
module reads the traces of a range's non-empty blocks in JSON-RPC batches, with one of:

* ``debug_traceBlockByHash`` with the ``callTracer`` (Geth, Erigon, Nethermind, Reth, anvil): the
  trace of exactly the block body the scanner read, so a reorg cannot mix two chains;
* ``trace_block`` (Erigon, Nethermind, Reth, anvil): each trace names its block hash, checked.

The first one the node answers is used (probed once, at start, by :meth:`TraceReader.probe`).

A call is credited when it is a ``CALL`` with value > 0, its transaction succeeded (the top frame
did not revert), and neither the frame itself nor any of its ancestors reverted (a reverted
frame's sends are undone). Its position is its index in the transaction's call tree in
depth-first pre-order; the transaction's own call is position 0 (the top-level transfer read from
the block body). The transfer's ``log_index`` is ``-1 - position`` (see :func:`internal_index`):
position 0 maps to ``NATIVE_INDEX`` (-1), inner calls to -2, -3, ..., a space distinct from the
log indexes of token transfers (>= 0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from paywatch.chains.base import BlockRef, WatchPredicate
from paywatch.chains.evm_rpc import RpcClient, RpcError
from paywatch.domain.transfer import NATIVE, NATIVE_INDEX, Transfer
from paywatch.errors import ChainError, ConfigError, RetryableChainError

#: Block traces per JSON-RPC batch (traces are large; a refused batch is halved by the client).
TRACE_BATCH = 10
CALL_TRACER = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": False}}

#: Words of the answers of providers that do not offer a method (besides JSON-RPC code -32601).
_REFUSAL_HINTS = ("not supported", "unsupported", "does not exist", "not available", "not found", "not allowed")

TraceMethod = Literal["debug_traceBlockByHash", "trace_block"]
METHODS: tuple[TraceMethod, ...] = ("debug_traceBlockByHash", "trace_block")


def internal_index(position: int) -> int:
    """The ``Transfer.log_index`` of the call at ``position`` in its transaction's trace."""
    return NATIVE_INDEX - position


@dataclass(frozen=True, slots=True)
class InternalCall:
    """One credited call: transaction, position in its trace, sender, recipient and value."""

    tx_hash: str
    position: int
    from_address: str
    to_address: str
    value: int


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value or 0)


def calltracer_calls(tx_hash: str, root: dict[str, Any]) -> Iterator[InternalCall]:
    """The credited inner calls of one ``callTracer`` tree (nothing when the transaction reverted)."""
    if root.get("error"):
        return
    position = 0
    stack: list[dict[str, Any]] = list(reversed(root.get("calls") or ()))
    while stack:
        frame = stack.pop()
        position += 1
        if frame.get("error"):  # reverted: neither it nor anything under it happened
            position += _count(frame.get("calls") or ())
            continue
        value = _int(frame.get("value", "0x0"))
        if frame.get("type") == "CALL" and value > 0 and frame.get("to"):
            yield InternalCall(tx_hash, position, str(frame["from"]).lower(), str(frame["to"]).lower(), value)
        stack.extend(reversed(frame.get("calls") or ()))


def _count(frames: Sequence[dict[str, Any]]) -> int:
    """How many frames a subtree list holds (to keep positions of later siblings stable)."""
    total = 0
    stack = list(frames)
    while stack:
        frame = stack.pop()
        total += 1
        stack.extend(frame.get("calls") or ())
    return total


def parity_calls(traces: Sequence[dict[str, Any]]) -> Iterator[InternalCall]:
    """The credited inner calls of ``trace_block``/``trace_transaction`` output (pre-order, flat)."""
    reverted: dict[str, list[tuple[int, ...]]] = {}
    positions: dict[str, int] = {}
    for trace in traces:
        tx = trace.get("transactionHash")
        if not tx:  # block and uncle rewards
            continue
        tx_hash = str(tx).lower()
        position = positions.get(tx_hash, -1) + 1
        positions[tx_hash] = position
        address = tuple(trace.get("traceAddress") or ())
        failed = reverted.setdefault(tx_hash, [])
        if trace.get("error"):
            failed.append(address)
        if any(address[: len(f)] == f for f in failed) or position == 0:
            continue  # reverted itself, under a reverted frame, or the transaction's own call
        action = trace.get("action") or {}
        value = _int(action.get("value", "0x0"))
        if trace.get("type") == "call" and action.get("callType") == "call" and value > 0 and action.get("to"):
            yield InternalCall(tx_hash, position, str(action["from"]).lower(), str(action["to"]).lower(), value)


class TraceReader:
    """Reads credited internal calls over one network's RpcClient with the method the node offers."""

    def __init__(self, rpc: RpcClient, network: str) -> None:
        self._rpc = rpc
        self._network = network
        self.method: TraceMethod | None = None

    def probe(self, block_hash: str, number: int) -> TraceMethod:
        """Pick the first trace method the node answers for one block; ConfigError when it refuses all."""
        refusals: list[str] = []
        for method in METHODS:
            try:
                self._rpc.call(method, self._params(method, block_hash, number))
            except RpcError as exc:
                refusals.append(f"{method}: JSON-RPC error {exc.code}: {exc.message}")
                continue
            except RetryableChainError as exc:  # some providers refuse with -32000 or HTTP 4xx/5xx
                if not any(hint in str(exc).lower() for hint in _REFUSAL_HINTS):
                    raise
                refusals.append(f"{method}: {exc}")
                continue
            self.method = method
            return method
        raise ConfigError(
            f"networks.{self._network}.internal_transfers: `trace` needs a node that answers "
            f"debug_traceBlockByHash (callTracer) or trace_block, and this one refused both "
            f"({'; '.join(refusals)}); use a node with trace methods or set `internal_transfers: off`"
        )

    def calls(self, blocks: Sequence[tuple[BlockRef, Sequence[str]]]) -> list[tuple[BlockRef, InternalCall]]:
        """The credited internal calls of ``blocks`` (each with its transaction hashes, in order);
        blocks without transactions are not traced."""
        method = self._require()
        wanted = [(ref, hashes) for ref, hashes in blocks if hashes]
        if not wanted:
            return []
        try:
            results = self._rpc.batch(
                [(method, self._params(method, ref.hash, ref.number)) for ref, _ in wanted], chunk=TRACE_BATCH
            )
        except RpcError as exc:
            raise ChainError(
                f"{self._network}: the node refused {method} ({exc.message}); internal transfers need it"
            ) from None
        found: list[tuple[BlockRef, InternalCall]] = []
        for (ref, hashes), result in zip(wanted, results, strict=True):
            found.extend((ref, call) for call in self._block_calls(method, ref, hashes, result))
        return found

    def transaction_calls(self, tx_hash: str) -> list[InternalCall]:
        """The credited internal calls of one transaction (for ``paywatch rescan-tx``)."""
        method = self._require()
        if method == "trace_block":
            result = self._rpc.call("trace_transaction", [tx_hash])
            return list(parity_calls(result if isinstance(result, list) else []))
        result = self._rpc.call("debug_traceTransaction", [tx_hash, CALL_TRACER])
        return list(calltracer_calls(tx_hash.lower(), result)) if isinstance(result, dict) else []

    def _require(self) -> TraceMethod:
        if self.method is None:
            raise ChainError(f"{self._network}: internal transfers are on but no trace method was probed")
        return self.method

    @staticmethod
    def _params(method: TraceMethod, block_hash: str, number: int) -> list[Any]:
        if method == "trace_block":
            return [hex(number)]
        return [block_hash, CALL_TRACER]

    def _block_calls(
        self, method: TraceMethod, ref: BlockRef, hashes: Sequence[str], result: Any
    ) -> Iterator[InternalCall]:
        if not isinstance(result, list):
            raise RetryableChainError(f"{self._network}: {method} of block {ref.number} answered {result!r:.200}")
        if method == "trace_block":
            if any(str(t.get("blockHash", ref.hash)).lower() != ref.hash for t in result):
                raise RetryableChainError(f"{self._network}: the traces of block {ref.number} are of another block")
            yield from parity_calls(result)
            return
        if len(result) != len(hashes):
            raise RetryableChainError(f"{self._network}: {method} of block {ref.number}: {len(result)} traces")
        for tx_hash, item in zip(hashes, result, strict=True):
            root = item.get("result") if isinstance(item, dict) else None
            named = str(item.get("txHash") or tx_hash).lower() if isinstance(item, dict) else ""
            if not isinstance(root, dict) or named != tx_hash:
                raise RetryableChainError(f"{self._network}: {method} of block {ref.number} is of another block")
            yield from calltracer_calls(tx_hash, root)


def internal_transfers(
    network: str, calls: Sequence[tuple[BlockRef, InternalCall]], watched: WatchPredicate
) -> list[Transfer]:
    """Transfers for the calls that pay a watched address."""
    return [
        Transfer(
            network=network,
            tx_hash=call.tx_hash,
            log_index=internal_index(call.position),
            block_number=ref.number,
            block_hash=ref.hash,
            block_time=ref.timestamp,
            from_address=call.from_address,
            to_address=call.to_address,
            asset_key=NATIVE,
            amount=call.value,
        )
        for ref, call in calls
        if watched(call.to_address)
    ]
