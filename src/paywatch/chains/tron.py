"""The Tron adapter: TRX and TRC-20 transfers from a java-tron HTTP API (TronGrid or a full node).

Per block it makes two calls, whatever the block holds: ``wallet/getblockbynum`` for the
transactions, their ``contractRet`` and memos, and ``wallet/gettransactioninfobyblocknum`` for every
transaction's receipt and event logs. Both are decoded straight into typed structs
(:mod:`paywatch.chains.tron_wire`, msgspec), only the fields read here; other calls use tronpy. Heights come from
``wallet/getnodeinfo``: its ``block`` (tip) and ``solidityBlock`` (solidified, when the network's
``finality`` is ``solidified``), one small call that never downloads a block. A catch-up reads up to
``FETCH_CONCURRENCY`` blocks at once; the network's request budget still spaces every request.

What is reported:

* TRX: a ``TransferContract`` with a positive amount to a watched address;
* TRC-20: a ``Transfer(address,address,uint256)`` log with a positive value to a watched address,
  emitted by a contract configured in networks.yaml (never recognised by symbol);
* ``success`` only when the block says ``contractRet: SUCCESS`` and the transaction info does not
  say ``result: FAILED`` and, for contract calls, its ``receipt.result`` is ``SUCCESS``;
* ``memo``: the transaction's ``raw_data.data`` decoded as UTF-8 (None when absent or undecodable).

Every answer is checked for coherence (the block number asked for, one transaction info per
transaction of that very block). Answers that do not fit together yet (common behind a load
balancer at the tip) are re-read a few times with backoff, then raise RetryableChainError so that
the scan stops and retries instead of skipping anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from tronpy import Tron
from tronpy.exceptions import BlockNotFound, TransactionNotFound

from paywatch.chains.base import NATIVE, NATIVE_INDEX, BlockRef, Heights, ScannedRange, Transfer, WatchPredicate
from paywatch.chains.tron_addresses import (
    BadTronAddress,
    base58_to_account,
    hex_to_base58,
    log_address_to_account,
    topic_to_base58,
)
from paywatch.chains.tron_http import RetryPolicy, TronHttp, TronpyProvider
from paywatch.chains.tron_wire import (
    BLOCK,
    BLOCK_INFOS,
    WireBlock,
    WireBlockHead,
    WireInfo,
    WireTx,
    block_head_of,
    info_of,
    transfer_value,
)
from paywatch.config import NetworkConfig
from paywatch.errors import ChainError, RetryableChainError
from paywatch.redact import describe

#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SUCCESS = "SUCCESS"
#: Blocks read at once during a catch-up (each read is two requests, all within the request budget).
FETCH_CONCURRENCY = 4
MAX_MEMO_CHARS = 256  # the memo columns' size; longer memos are cut (they cannot match an invoice anyway)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")


class IncoherentAnswer(RetryableChainError):
    """The node's answers do not fit together yet (a block not there, infos missing or of another
    version of the block): typical of load-balanced providers at the tip; re-read shortly."""


def block_time(milliseconds: int) -> datetime:
    """A Tron timestamp (milliseconds since the epoch) as an aware UTC datetime, without floats."""
    return _EPOCH + timedelta(milliseconds=int(milliseconds))


def millis(when: datetime) -> int:
    """The inverse of :func:`block_time`: milliseconds since the epoch, as an integer."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


def decode_memo(data: object) -> str | None:
    """``raw_data.data`` (hex) -> the memo text; None when absent, empty, undecodable or holding NUL."""
    if not isinstance(data, str) or not data:
        return None
    try:
        text = bytes.fromhex(data).decode("utf-8")
    except ValueError:  # odd length, not hex, or not UTF-8
        return None
    text = text.strip()
    if not text or "\x00" in text:
        return None
    return text[:MAX_MEMO_CHARS]


def block_ref(block: WireBlockHead) -> BlockRef:
    """The identity of a ``protocol.Block`` answer (hex or ``visible`` form alike)."""
    if block.blockID is None or block.block_header is None:
        raise ValueError("a block answer without blockID or block_header")
    raw = block.block_header.raw_data
    return BlockRef(
        number=raw.number,
        hash=block.blockID,
        parent_hash=raw.parentHash,
        timestamp=block_time(raw.timestamp),
    )


def _parse_height(text: object) -> int:
    """``"Num:71562193,ID:0000..."`` (getnodeinfo) -> 71562193."""
    if not isinstance(text, str) or not text.startswith("Num:"):
        raise ValueError(f"expected 'Num:<height>,ID:<hash>', got {text!r}")
    return int(text[4:].split(",", 1)[0])


class TronAdapter:
    """Reads one Tron network through tronpy and a rate-limited httpx transport.

    ``client`` (an ``httpx.Client``) and ``clock``/``sleep`` are injectable for tests; ``policy``
    tunes retries. ``http.calls`` counts the HTTP requests sent.
    """

    def __init__(
        self,
        network: NetworkConfig,
        *,
        client: httpx.Client | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if network.family != "tron":
            raise ValueError(f"network {network.name} is not a tron network")
        self.network = network.name
        self.solidified = network.finality == "solidified"
        timing: dict[str, Any] = {}
        if clock is not None:
            timing["clock"] = clock
        if sleep is not None:
            timing["sleep"] = sleep
        self._sleep: Callable[[float], None] = sleep or time.sleep
        self.http = TronHttp(
            network.rpc_urls,
            api_key=network.api_key,
            endpoint_headers=tuple(network.endpoint_headers(e) for e in network.endpoints) or None,
            proxy=network.proxy,
            requests_per_second=network.requests_per_second,
            client=client,
            policy=policy,
            network=network.name,
            max_response_bytes=network.max_response_bytes,
            **timing,
        )
        self._tron = Tron(provider=TronpyProvider(self.http))
        self._pool: ThreadPoolExecutor | None = None
        # configured TRC-20 contracts: 20-byte account hex (the log form) -> base58 as in networks.yaml
        self._tokens = {
            base58_to_account(asset.contract): asset.contract
            for asset in network.assets.values()
            if asset.contract is not None
        }

    def close(self) -> None:
        """Stop the block readers and close the HTTP client if the adapter created it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.http.close()

    # --- the ChainAdapter Protocol -------------------------------------------------------------

    def heights(self) -> Heights:
        """Tip and solidified height from one ``wallet/getnodeinfo`` (its ``block`` and
        ``solidityBlock``); ``walletsolidity/getnowblock`` only for a node whose info lacks the latter."""
        info = self._guard("wallet/getnodeinfo", self._tron.get_node_info)
        tip = self._guard("wallet/getnodeinfo", lambda: _parse_height(info.get("block")))
        if not self.solidified:
            return Heights(tip=tip)
        if info.get("solidityBlock"):
            solid = self._guard("wallet/getnodeinfo", lambda: _parse_height(info.get("solidityBlock")))
            return Heights(tip=tip, final=min(solid, tip))
        solid_block = self._guard("walletsolidity/getnowblock", self._tron.get_latest_solid_block)
        if not solid_block:
            raise RetryableChainError(f"{self.network}: the solidity node has no block yet")
        solid = self._guard("walletsolidity/getnowblock", lambda: block_ref(block_head_of(solid_block)).number)
        return Heights(tip=tip, final=min(solid, tip))

    def block_ref(self, number: int) -> BlockRef:
        return self._coherent(lambda: block_ref(self._block(number)))

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        """Two calls per block, up to FETCH_CONCURRENCY blocks at once (the request budget is shared);
        raises before returning anything if one block cannot be read whole."""
        numbers = range(start, end + 1)
        read: Callable[[int], tuple[BlockRef, list[Transfer]]] = lambda n: self._coherent(  # noqa: E731
            partial(self._read_block, n, watched)
        )
        if len(numbers) == 1:
            results = [read(start)]
        else:
            futures = [self._executor().submit(read, n) for n in numbers]
            try:
                results = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        refs = tuple(ref for ref, _ in results)
        return ScannedRange(blocks=refs, transfers=tuple(t for _, found in results for t in found))

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix=f"tron-{self.network}")
        return self._pool

    def _read_block(self, number: int, watched: WatchPredicate) -> tuple[BlockRef, list[Transfer]]:
        block = self._block(number)
        infos = self._block_infos(number)
        return self._guard(f"block {number}", partial(self._parse_block, block, infos, watched))

    def _coherent(self, read: Callable[[], _T]) -> _T:
        """Re-read (with backoff) while the node's answers do not fit together; then give up retryably."""
        policy = self.http.policy
        for attempt in range(1, policy.attempts + 1):
            try:
                return read()
            except IncoherentAnswer:
                if attempt == policy.attempts:
                    raise
                self._sleep(policy.delay(attempt))
        raise AssertionError("unreachable")

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        """One transaction's transfers and its block's ref; empty when the node cannot find it."""
        txid = tx_hash.lower().removeprefix("0x")
        if len(txid) != 64 or any(c not in "0123456789abcdef" for c in txid):
            raise ChainError(f"{tx_hash!r} is not a Tron transaction id (64 hex digits)")
        try:
            info = self._guard("wallet/gettransactioninfobyid", lambda: self._tron.get_transaction_info(txid))
        except TransactionNotFound:
            return ScannedRange(blocks=(), transfers=())  # pending or unknown: never credited
        number = self._guard("wallet/gettransactioninfobyid", lambda: int(info["blockNumber"]))
        typed = self._guard("wallet/gettransactioninfobyid", lambda: info_of(info))

        def read() -> ScannedRange:
            block = self._block(number)
            txs = [tx for tx in block.transactions or () if tx.txID == txid]
            if not txs:
                raise IncoherentAnswer(f"{self.network}: transaction {txid} is not in block {number} (reorg?)")

            def parse() -> ScannedRange:
                ref = block_ref(block)
                self._check_info(typed, ref, millis(ref.timestamp))
                return ScannedRange(blocks=(ref,), transfers=tuple(self._parse_tx(txs[0], typed, ref, watched)))

            return self._guard(f"transaction {txid}", parse)

        return self._coherent(read)

    # --- node calls ------------------------------------------------------------------------------

    def _block(self, number: int) -> WireBlock:
        block: WireBlock = self._guard(
            f"wallet/getblockbynum {number}",
            lambda: self.http.post("wallet/getblockbynum", {"num": number, "visible": False}, decoder=BLOCK),
        )
        if block.blockID is None and block.block_header is None and not block.transactions:
            raise IncoherentAnswer(f"{self.network}: block {number} is not on the node yet")
        got = self._guard(f"block {number}", lambda: block_ref(block).number)
        if got != number:
            raise ChainError(f"{self.network}: asked for block {number}, the node answered block {got}")
        return block

    def _block_infos(self, number: int) -> list[WireInfo]:
        answer = self._guard(
            f"wallet/gettransactioninfobyblocknum {number}",
            lambda: self.http.post("wallet/gettransactioninfobyblocknum", {"num": number}, decoder=BLOCK_INFOS),
        )
        if answer == {}:
            return []  # java-tron's answer for a block without transaction infos
        if not isinstance(answer, list):
            raise ChainError(f"{self.network}: gettransactioninfobyblocknum {number}: expected a JSON array")
        return answer

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        """Run a node call or a parse; turn library and shape errors into ChainError."""
        try:
            return call()
        except (ChainError, BlockNotFound, TransactionNotFound):
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, BadTronAddress) as exc:
            failure = ChainError(f"{self.network}: {what}: unexpected answer ({describe(exc)})")
        except Exception as exc:  # tronpy's ApiError, BugInJavaTron, UnknownError...
            failure = ChainError(f"{self.network}: {what}: {describe(exc)}")
        raise failure  # outside the except blocks: the library's exception (and its text) is not chained

    # --- parsing -----------------------------------------------------------------------------------

    def _parse_block(
        self, block: WireBlock, infos: list[WireInfo], watched: WatchPredicate
    ) -> tuple[BlockRef, list[Transfer]]:
        ref = block_ref(block)
        txs = block.transactions or []
        by_id = {str(info.id): info for info in infos}
        if len(by_id) != len(txs) or len(infos) != len(txs):
            raise IncoherentAnswer(
                f"{self.network}: block {ref.number} has {len(txs)} transactions but the node gave "
                f"{len(infos)} transaction infos"
            )
        transfers: list[Transfer] = []
        stamp = millis(ref.timestamp)
        for tx in txs:
            info = by_id.get(tx.txID)
            if info is None:
                raise IncoherentAnswer(
                    f"{self.network}: no transaction info for {tx.txID} in block {ref.number} (reorg?)"
                )
            self._check_info(info, ref, stamp)
            transfers.extend(self._parse_tx(tx, info, ref, watched))
        return ref, transfers

    def _check_info(self, info: WireInfo, ref: BlockRef, stamp: int) -> None:
        """``stamp``: ``millis(ref.timestamp)``, computed once per block."""
        if info.blockNumber != ref.number or info.blockTimeStamp != stamp:
            raise IncoherentAnswer(
                f"{self.network}: transaction info {info.id} belongs to another version of block {ref.number}"
            )

    def _parse_tx(self, tx: WireTx, info: WireInfo, ref: BlockRef, watched: WatchPredicate) -> list[Transfer]:
        raw = tx.raw_data
        contracts = raw.contract
        if not contracts:
            return []
        contract = contracts[0]  # java-tron accepts exactly one contract per transaction
        rets = tx.ret or []
        executed = bool(rets and rets[0].contractRet == SUCCESS and info.result != "FAILED")
        found: list[Transfer] = []
        if contract.type == "TransferContract":
            value = transfer_value(contract)
            amount = value.amount
            to_address = hex_to_base58(value.to_address)
            if amount > 0 and watched(to_address):
                found.append(
                    Transfer(
                        network=self.network,
                        tx_hash=tx.txID,
                        log_index=NATIVE_INDEX,
                        block_number=ref.number,
                        block_hash=ref.hash,
                        block_time=ref.timestamp,
                        from_address=hex_to_base58(value.owner_address),
                        to_address=to_address,
                        asset_key=NATIVE,
                        amount=amount,
                        memo=decode_memo(raw.data),
                        success=executed,
                    )
                )
        logs = info.log
        if not logs:
            return found
        succeeded = bool(executed and info.receipt is not None and info.receipt.result == SUCCESS)
        for index, log in enumerate(logs):
            topics = log.topics
            if not topics or len(topics) != 3 or topics[0].lower() != TRANSFER_TOPIC:
                continue
            token = self._tokens.get(log_address_to_account(log.address))
            data = log.data
            if token is None or len(data) != 64:
                continue
            to_address = topic_to_base58(topics[2])
            if not watched(to_address):
                continue  # most of a block: decided before anything else is decoded
            amount = int(data, 16)
            if amount == 0:
                continue
            found.append(
                Transfer(
                    network=self.network,
                    tx_hash=tx.txID,
                    log_index=index,
                    block_number=ref.number,
                    block_hash=ref.hash,
                    block_time=ref.timestamp,
                    from_address=topic_to_base58(topics[1]),
                    to_address=to_address,
                    asset_key=token,
                    amount=amount,
                    memo=decode_memo(raw.data),
                    success=succeeded,
                )
            )
        return found
