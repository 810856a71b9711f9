"""The adapter for every EVM network (Ethereum, BSC, Polygon, Arbitrum, Base, anvil).

* Native-coin transfers come from block bodies read with JSON-RPC batches; the receipts of the
  transactions that pay a watched address (native or token) are read in one more batch
  (status 0 = failed).
* ERC-20 ``Transfer`` logs come from ``eth_getLogs`` over the range, for the configured contracts
  only. A provider that refuses the range gets halves of it, down to single blocks; the span that
  worked is remembered for the next calls. A span shrunk by timeouts only (which a passing fault
  also gives) doubles back after a run of successful calls. Nothing is skipped: a block that
  cannot be read fails the whole call.
* Every log must belong to a block body read in the same call (same hash), so a reorg between the
  two reads fails the call instead of mixing two chains.
* Node answers are not trusted: a block body whose ``number``, ``hash`` or ``parentHash`` is
  malformed, a log from a contract that was not asked for, or a transaction hash that is not
  32 bytes of hex fails the call with ChainError (nothing is reported, so nothing is stored).
* A token transfer to a watched address also gets its index within its transaction
  (``tx_position``), from its receipt: its identity must survive re-mining in another block,
  where its block-wide ``logIndex`` changes.
* With ``quorum: 2`` the block hashes of every scanned range are read again from another
  ``rpc_urls`` entry than the one that answered; any difference fails the call (retryably).
* Native transfers made by contracts (internal calls) are not visible in block bodies. With
  ``internal_transfers: trace`` they are read from the call traces of the range's non-empty blocks
  (see ``evm_trace``); otherwise they are not reported. :meth:`EvmAdapter.preflight` checks at
  start that the node answers a trace method.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from paywatch.chains.base import BlockRef, ScannedRange, WatchPredicate
from paywatch.chains.evm_rpc import JsonRpcProvider, ProviderFactory, QueryTooLarge, RpcClient, Web3Provider
from paywatch.chains.evm_trace import TraceReader, internal_transfers
from paywatch.config import NetworkConfig
from paywatch.domain.status import Heights
from paywatch.domain.transfer import NATIVE, NATIVE_INDEX, Transfer, address_key
from paywatch.errors import ChainError, RetryableChainError
from paywatch.redact import render_endpoint

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
#: Requests per JSON-RPC batch for block bodies (full blocks are large) and for receipts.
BODY_BATCH = 25
RECEIPT_BATCH = 100
#: Successful ``eth_getLogs`` calls after which a span shrunk by timeouts is doubled again.
LOG_SPAN_REGROW = 20
_HASH32 = re.compile(r"0x[0-9a-fA-F]{64}")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(_int(value), UTC)


def _hash32(value: Any, network: str, what: str) -> str:
    """``value`` lowercased if it is 32 bytes of 0x-hex; else ChainError naming ``what`` (the
    node's value is not echoed: it is untrusted and may be huge)."""
    if not isinstance(value, str) or _HASH32.fullmatch(value) is None:
        raise ChainError(f"{network}: malformed node answer: {what} is not 32 bytes of hex")
    return value.lower()


def _ref(block: dict[str, Any], network: str) -> BlockRef:
    """The reference of a block body, refusing a malformed hash, parentHash or number."""
    number = block.get("number")
    if not (isinstance(number, str) and _QUANTITY.fullmatch(number)) and not (type(number) is int and number >= 0):
        raise ChainError(f"{network}: malformed node answer: block number is not a hex quantity")
    where = f"block {_int(number)}"
    return BlockRef(
        number=_int(number),
        hash=_hash32(block.get("hash"), network, f"{where} hash"),
        parent_hash=_hash32(block.get("parentHash"), network, f"{where} parentHash"),
        timestamp=_time(block["timestamp"]),
    )


class EvmAdapter:
    """Read-only access to one EVM network through its ``rpc_urls`` (failover in order).

    ``provider_factory`` builds the JSON-RPC provider for a URL (default: web3's HTTPProvider);
    ``sleep`` is the backoff's sleep, injectable for tests.
    """

    def __init__(
        self,
        network: NetworkConfig,
        *,
        provider_factory: ProviderFactory | None = None,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 4,
        timeout: float = 15.0,
    ) -> None:
        if network.family != "evm":
            raise ValueError(f"network {network.name} is not an evm network")
        self.network = network.name
        self._config = network
        headers = {e.url: network.endpoint_headers(e) for e in network.endpoints}

        def default_factory(url: str) -> JsonRpcProvider:
            return Web3Provider(
                url,
                timeout=timeout,
                headers=headers.get(url),
                proxy=network.proxy,
                max_response_bytes=network.max_response_bytes,
            )

        self.rpc = RpcClient(
            network.rpc_urls,
            provider_factory=provider_factory or default_factory,
            attempts=attempts,
            sleep=sleep,
            timeout=timeout,
            requests_per_second=network.requests_per_second,
            network=network.name,
        )
        self._witnesses = (
            [
                RpcClient(
                    [url],
                    provider_factory=provider_factory or default_factory,
                    attempts=attempts,
                    sleep=sleep,
                    timeout=timeout,
                    requests_per_second=network.requests_per_second,
                    network=network.name,
                )
                for url in network.rpc_urls
            ]
            if network.quorum == 2
            else []
        )
        self._tokens = sorted(address_key(a.contract) for a in network.assets.values() if a.contract is not None)
        self._native = any(a.native for a in network.assets.values())
        self._traces = TraceReader(self.rpc, network.name) if network.internal_transfers == "trace" else None
        self._log_span = network.max_block_range
        self._log_ceiling = network.max_block_range  # lowered only by a provider's explicit refusals
        self._log_successes = 0

    @property
    def log_span(self) -> int:
        """The ``eth_getLogs`` span currently used (shrinks after a provider refused a larger one)."""
        return self._log_span

    def preflight(self) -> None:
        """Checks made once at start: with ``internal_transfers: trace``, that the node answers a
        trace method (ConfigError naming the setting when it refuses them)."""
        if self._traces is not None and self._traces.method is None:
            latest = self.rpc.call("eth_getBlockByNumber", ["latest", False])
            if not isinstance(latest, dict):
                raise RetryableChainError(f"{self.network}: the node has no latest block")
            self._traces.probe(str(latest["hash"]).lower(), _int(latest["number"]))

    # --- ChainAdapter ----------------------------------------------------------------------------

    def heights(self) -> Heights:
        if self._config.finality != "finalized":
            return Heights(tip=_int(self.rpc.call("eth_blockNumber", [])))
        tip, final = self.rpc.batch([("eth_blockNumber", []), ("eth_getBlockByNumber", ["finalized", False])])
        if not isinstance(final, dict):
            raise ChainError(f"{self.network}: the node has no `finalized` block; use `confirmations` instead")
        return Heights(tip=_int(tip), final=_int(final["number"]))

    def block_ref(self, number: int) -> BlockRef:
        block = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        if not isinstance(block, dict):
            raise RetryableChainError(f"{self.network}: block {number} is not available yet")
        return _ref(block, self.network)

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        if start > end:
            raise ValueError(f"empty range {start}..{end}")
        bodies = self.rpc.batch(
            [("eth_getBlockByNumber", [hex(n), self._native]) for n in range(start, end + 1)], chunk=BODY_BATCH
        )
        refs: list[BlockRef] = []
        traced: list[tuple[BlockRef, list[str]]] = []
        natives: list[tuple[dict[str, Any], BlockRef]] = []
        for number, body in zip(range(start, end + 1), bodies, strict=True):
            if not isinstance(body, dict):
                raise RetryableChainError(f"{self.network}: block {number} is not available yet")
            ref = _ref(body, self.network)
            if ref.number != number:
                raise ChainError(f"{self.network}: asked for block {number}, got {ref.number}")
            if refs and ref.parent_hash != refs[-1].hash:
                raise RetryableChainError(f"{self.network}: the chain changed while reading block {number}")
            refs.append(ref)
            if self._native:
                natives.extend((tx, ref) for tx in body.get("transactions", ()) if _pays_watched(tx, watched))
            if self._traces is not None:
                traced.append((ref, [_tx_hash(tx) for tx in body.get("transactions", ())]))
        if self._witnesses:
            self._cross_check(refs)
        by_hash = {ref.hash: ref for ref in refs}
        tokens = self._token_transfers(start, end, by_hash, watched) if self._tokens else []
        receipts = self._receipts([tx["hash"] for tx, _ in natives] + [t.tx_hash for t in tokens])
        transfers = self._native_transfers(natives, receipts) + self._with_positions(tokens, receipts)
        if self._traces is not None:
            self.preflight()
            transfers.extend(internal_transfers(self.network, self._traces.calls(traced), watched))
        transfers.sort(key=lambda t: (t.block_number, t.log_index, t.tx_hash))
        return ScannedRange(blocks=tuple(refs), transfers=tuple(transfers))

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        tx, receipt = self.rpc.batch(
            [("eth_getTransactionByHash", [tx_hash]), ("eth_getTransactionReceipt", [tx_hash])]
        )
        if not isinstance(tx, dict):
            raise ChainError(f"{self.network}: transaction {tx_hash} not found")
        if not isinstance(receipt, dict) or receipt.get("blockHash") is None:
            raise ChainError(f"{self.network}: transaction {tx_hash} is not mined yet")
        ref = self.block_ref(_int(receipt["blockNumber"]))
        if ref.hash != str(receipt["blockHash"]).lower():
            raise RetryableChainError(f"{self.network}: the block of {tx_hash} changed while reading it")
        success = _int(receipt.get("status", "0x1")) == 1
        transfers: list[Transfer] = []
        if self._native and _pays_watched(tx, watched):
            transfers.append(self._native_transfer(tx, ref, success))
        if self._traces is not None:
            self.preflight()
            calls = [(ref, call) for call in self._traces.transaction_calls(str(tx["hash"]).lower())]
            transfers.extend(internal_transfers(self.network, calls, watched))
        tokens = set(self._tokens)
        for position, log in enumerate(receipt.get("logs", ())):
            if str(log.get("address", "")).lower() in tokens:
                transfer = self._log_transfer(log, ref, watched)
                if transfer is not None:
                    transfers.append(replace(transfer, tx_position=position))
        return ScannedRange(blocks=(ref,), transfers=tuple(transfers))

    def _cross_check(self, refs: list[BlockRef]) -> None:
        """``quorum: 2``: another URL than the one that answered must report the same block hashes."""
        index = (self.rpc.current + 1) % len(self._witnesses)
        witness = self._witnesses[index]
        numbers = [ref.number for ref in refs]
        answers = witness.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers], chunk=BODY_BATCH)
        for ref, answer in zip(refs, answers, strict=True):
            seen = _ref(answer, self.network).hash if isinstance(answer, dict) else None
            if seen != ref.hash:
                raise RetryableChainError(
                    f"{self.network}: quorum: {render_endpoint(witness.urls[0])} disagrees on the hash of block "
                    f"{ref.number}; nothing of blocks {numbers[0]}..{numbers[-1]} is stored"
                )

    # --- native ----------------------------------------------------------------------------------

    def _receipts(self, tx_hashes: list[str]) -> dict[str, Any]:
        """The receipts of these transactions (one batched round trip), by lowercase hash."""
        hashes = sorted({str(h).lower() for h in tx_hashes})
        if not hashes:
            return {}
        answers = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes], chunk=RECEIPT_BATCH)
        return dict(zip(hashes, answers, strict=True))

    def _native_transfers(
        self, natives: list[tuple[dict[str, Any], BlockRef]], receipts: dict[str, Any]
    ) -> list[Transfer]:
        transfers = []
        for tx, ref in natives:
            receipt = receipts.get(str(tx["hash"]).lower())
            if not isinstance(receipt, dict) or str(receipt.get("blockHash", "")).lower() != ref.hash:
                raise RetryableChainError(f"{self.network}: receipt of {tx['hash']} is missing or moved")
            transfers.append(self._native_transfer(tx, ref, _int(receipt.get("status", "0x1")) == 1))
        return transfers

    def _native_transfer(self, tx: dict[str, Any], ref: BlockRef, success: bool) -> Transfer:
        return Transfer(
            network=self.network,
            tx_hash=_hash32(tx.get("hash"), self.network, f"block {ref.number} transaction hash"),
            log_index=NATIVE_INDEX,
            block_number=ref.number,
            block_hash=ref.hash,
            block_time=ref.timestamp,
            from_address=str(tx["from"]).lower(),
            to_address=str(tx["to"]).lower(),
            asset_key=NATIVE,
            amount=_int(tx["value"]),
            success=success,
        )

    # --- tokens ----------------------------------------------------------------------------------

    def _token_transfers(
        self, start: int, end: int, by_hash: dict[str, BlockRef], watched: WatchPredicate
    ) -> list[Transfer]:
        transfers: list[Transfer] = []
        for log in self._logs(start, end):
            if str(log.get("address", "")).lower() not in self._tokens:
                raise ChainError(
                    f"{self.network}: malformed node answer: eth_getLogs {start}..{end} returned a log "
                    "of a contract that was not requested"
                )
            _hash32(log.get("transactionHash"), self.network, f"eth_getLogs {start}..{end} transactionHash")
            ref = by_hash.get(str(log.get("blockHash", "")).lower())
            if ref is None or ref.number != _int(log["blockNumber"]):
                raise RetryableChainError(
                    f"{self.network}: logs and blocks {start}..{end} disagree (reorg?): a log's blockHash is not "
                    "the hash of the block body at its height"
                )
            transfer = self._log_transfer(log, ref, watched)
            if transfer is not None:
                transfers.append(transfer)
        return transfers

    def _with_positions(self, transfers: list[Transfer], receipts: dict[str, Any]) -> list[Transfer]:
        """Each transfer with its log's index within its transaction, read from the receipts."""
        positions: dict[tuple[str, str, int], int] = {}
        for tx_hash, receipt in receipts.items():
            if not isinstance(receipt, dict):
                continue
            block_hash = str(receipt.get("blockHash", "")).lower()
            for index, log in enumerate(receipt.get("logs") or ()):
                positions[(tx_hash, block_hash, _int(log["logIndex"]))] = index
        placed = []
        for t in transfers:
            position = positions.get((t.tx_hash, t.block_hash, t.log_index))
            if position is None:
                raise RetryableChainError(f"{self.network}: receipt of {t.tx_hash} is missing or moved")
            placed.append(replace(t, tx_position=position))
        return placed

    def _logs(self, start: int, end: int) -> list[dict[str, Any]]:
        """Every Transfer log of the configured tokens in ``start..end``, splitting refused ranges."""
        logs: list[dict[str, Any]] = []
        pending = [(start, end)]
        while pending:
            lo, hi = pending.pop()
            if hi - lo + 1 > self._log_span:
                mid = lo + self._log_span - 1
                pending.extend([(mid + 1, hi), (lo, mid)])
                continue
            query = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": self._tokens, "topics": [TRANSFER_TOPIC]}
            try:
                result = self.rpc.call("eth_getLogs", [query], splittable=True)
            except QueryTooLarge as exc:
                if lo == hi:
                    raise
                self._log_span = max(1, (hi - lo + 1) // 2)
                if not exc.timed_out:  # the provider's stated limit: remembered for good
                    self._log_ceiling = min(self._log_ceiling, self._log_span)
                self._log_successes = 0
                pending.append((lo, hi))
                continue
            if not isinstance(result, list):
                raise RetryableChainError(f"{self.network}: eth_getLogs {lo}..{hi} answered {result!r:.200}")
            logs.extend(result)
            self._regrow_log_span()
        return logs

    def _regrow_log_span(self) -> None:
        """A span shrunk by timeouts alone (perhaps a passing fault) doubles back, up to the
        provider's stated limit, after LOG_SPAN_REGROW successful calls in a row."""
        if self._log_span >= self._log_ceiling:
            return
        self._log_successes += 1
        if self._log_successes >= LOG_SPAN_REGROW:
            self._log_span = min(self._log_ceiling, self._log_span * 2)
            self._log_successes = 0

    def _log_transfer(self, log: dict[str, Any], ref: BlockRef, watched: WatchPredicate) -> Transfer | None:
        topics: Sequence[str] = log.get("topics") or ()
        # ERC-20 Transfer: 3 topics and a 32-byte amount (ERC-721 puts the id in a 4th topic).
        if len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC or log.get("removed"):
            return None
        data = str(log.get("data", "0x"))
        if len(data) != 66:
            return None
        amount = int(data, 16)
        to_address = "0x" + str(topics[2])[-40:].lower()
        if amount <= 0 or not watched(to_address):
            return None
        return Transfer(
            network=self.network,
            tx_hash=_hash32(log.get("transactionHash"), self.network, f"block {ref.number} log transactionHash"),
            log_index=_int(log["logIndex"]),
            block_number=ref.number,
            block_hash=ref.hash,
            block_time=ref.timestamp,
            from_address="0x" + str(topics[1])[-40:].lower(),
            to_address=to_address,
            asset_key=str(log["address"]).lower(),
            amount=amount,
        )


def _tx_hash(tx: Any) -> str:
    return str(tx["hash"] if isinstance(tx, dict) else tx).lower()


def _pays_watched(tx: Any, watched: WatchPredicate) -> bool:
    if not isinstance(tx, dict):
        return False
    to = tx.get("to")
    return bool(to) and _int(tx.get("value", "0x0")) > 0 and watched(str(to).lower())
