"""The adapter for Bitcoin Core compatible nodes: Bitcoin (>= 0.21), Litecoin Core, Dogecoin Core.

* Blocks: one JSON-RPC batch of ``getblockhash`` for the range, then batches of ``getblock``
  verbosity 2 (``body_batch`` blocks each), processed batch by batch so that large blocks are
  not all held at once. A node without verbosity 2 (Dogecoin Core 1.14) gets verbose blocks and
  a batch of ``getrawtransaction`` for their transactions instead.
* Outputs (never inputs) to a watched address are transfers: ``log_index`` is the output index
  (``vout``), so a payment's identity is txid plus vout and several outputs of one transaction
  to one invoice add up. The address comes from ``scriptPubKey.address`` (Bitcoin Core >= 22)
  or the one-element ``scriptPubKey.addresses`` list (older nodes, Litecoin, Dogecoin). Outputs
  without an address (OP_RETURN, bare multisig, Litecoin's MWEB ``witness_mweb_hogaddr`` and
  ``witness_mweb_pegin``) are skipped.
* Amounts are exact: the transport parses numbers as Decimal; ``value * 10**8`` must be a whole
  number of satoshis or the call fails.
* Coinbase outputs carry the chain's coinbase maturity (100 blocks; Dogecoin 240) and count
  only once that deep.
* Mempool: ``getrawmempool`` (txids only) and ``getbestblockhash`` in one batch, then
  ``getrawtransaction`` for at most ``limit`` txids the caller has not read yet. A transaction
  signals BIP125 when one of its inputs has a sequence below 0xfffffffe, or when the node's
  ``getmempoolentry`` says ``bip125-replaceable`` (inherited from an unconfirmed parent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Set
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from paywatch.chains import utxo_addresses
from paywatch.chains.base import BlockRef, MempoolView, ScannedRange, WatchPredicate
from paywatch.chains.evm_rpc import ProviderFactory, RpcClient, RpcError
from paywatch.chains.utxo_rpc import BitcoinRpcProvider, redact
from paywatch.config import NetworkConfig
from paywatch.domain.status import Heights
from paywatch.domain.transfer import MEMPOOL_BLOCK, NATIVE, Transfer
from paywatch.errors import ChainError, RetryableChainError

SATOSHI = Decimal(100_000_000)
#: ``getblockhash`` calls per batch (tiny answers)
HASH_BATCH = 1000
#: ``getrawtransaction`` calls per batch in a mempool poll
MEMPOOL_TX_BATCH = 100
_FINAL_SEQUENCE = 0xFFFFFFFE  # a sequence below this signals BIP125 replaceability
_GENESIS_PARENT = "0" * 64


def satoshis(value: Any) -> int:
    """An amount in coins from the node (Decimal or int, never float) as an exact integer of satoshis."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise ChainError(f"expected an exact amount, got {type(value).__name__} {value!r:.40}")
    sats = Decimal(value) * SATOSHI
    if sats != sats.to_integral_value() or sats < 0:
        raise ChainError(f"amount {value} is not a whole number of satoshis")
    return int(sats)


def _ref(block: dict[str, Any]) -> BlockRef:
    return BlockRef(
        number=int(block["height"]),
        hash=str(block["hash"]),
        parent_hash=str(block.get("previousblockhash") or _GENESIS_PARENT),
        timestamp=datetime.fromtimestamp(int(block["time"]), UTC),
    )


def output_address(output: dict[str, Any]) -> str | None:
    """The one address an output pays: ``scriptPubKey.address`` or a one-element ``addresses``."""
    script = output.get("scriptPubKey")
    if not isinstance(script, dict):
        return None
    address = script.get("address")
    if isinstance(address, str):
        return address
    addresses = script.get("addresses")
    if isinstance(addresses, list) and len(addresses) == 1 and isinstance(addresses[0], str):
        return addresses[0]
    return None


def is_coinbase(tx: dict[str, Any]) -> bool:
    """A block's first transaction, which mints the subsidy and fees: its input has ``coinbase``."""
    inputs: list[Any] = tx.get("vin") or []
    return bool(inputs) and isinstance(inputs[0], dict) and "coinbase" in inputs[0]


def signals_rbf(tx: dict[str, Any]) -> bool:
    """BIP125 explicit signalling: an input with a sequence below 0xfffffffe."""
    return any(int(i.get("sequence", 0xFFFFFFFF)) < _FINAL_SEQUENCE for i in tx.get("vin") or () if isinstance(i, dict))


class UtxoAdapter:
    """Read-only access to one Bitcoin Core compatible network through its ``rpc_urls`` (failover in order).

    ``provider_factory`` builds the provider for a URL (default: :class:`BitcoinRpcProvider`, with
    the network's cookie file); ``sleep`` is the backoff's sleep, injectable for tests.
    """

    def __init__(
        self,
        network: NetworkConfig,
        *,
        provider_factory: ProviderFactory | None = None,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 4,
        timeout: float = 30.0,
    ) -> None:
        if network.family != "utxo" or network.chain is None:
            raise ValueError(f"network {network.name} is not a utxo network")
        self.network = network.name
        self._config = network
        shown = [redact(url) for url in network.rpc_urls]
        real = dict(zip(shown, network.rpc_urls, strict=True))

        def default_factory(url: str) -> BitcoinRpcProvider:
            return BitcoinRpcProvider(
                real.get(url, url),
                cookie_file=network.rpc_cookie_file,
                timeout=timeout,
                max_response_bytes=network.max_response_bytes,
            )

        self.rpc = RpcClient(
            shown,
            provider_factory=provider_factory or default_factory,
            attempts=attempts,
            sleep=sleep,
            timeout=timeout,
            requests_per_second=network.requests_per_second,
            network=network.name,
        )
        self._maturity = utxo_addresses.params(network.chain, network.net).coinbase_maturity
        self._legacy_blocks = False  # the node has no getblock verbosity 2 (Dogecoin Core 1.14)

    # --- ChainAdapter ----------------------------------------------------------------------------

    def heights(self) -> Heights:
        return Heights(tip=int(self.rpc.call("getblockcount", [])))

    def block_ref(self, number: int) -> BlockRef:
        block_hash = self.rpc.call("getblockhash", [number])
        header = self.rpc.call("getblockheader", [block_hash, True])
        if not isinstance(header, dict) or int(header.get("height", -1)) != number:
            raise RetryableChainError(f"{self.network}: block {number} is not available yet")
        return _ref(header)

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        if start > end:
            raise ValueError(f"empty range {start}..{end}")
        numbers = list(range(start, end + 1))
        hashes = self.rpc.batch([("getblockhash", [n]) for n in numbers], chunk=HASH_BATCH)
        refs: list[BlockRef] = []
        transfers: list[Transfer] = []
        step = self._config.body_batch
        for offset in range(0, len(numbers), step):
            part = list(zip(numbers[offset : offset + step], hashes[offset : offset + step], strict=True))
            bodies = self._bodies([h for _, h in part])
            for (number, block_hash), body in zip(part, bodies, strict=True):
                if not isinstance(body, dict) or body.get("hash") != block_hash:
                    raise RetryableChainError(f"{self.network}: block {number} changed while reading it")
                ref = _ref(body)
                if ref.number != number:
                    raise ChainError(f"{self.network}: asked for block {number}, got {ref.number}")
                if refs and ref.parent_hash != refs[-1].hash:
                    raise RetryableChainError(f"{self.network}: the chain changed while reading block {number}")
                refs.append(ref)
                for tx in body.get("tx") or ():
                    transfers.extend(self._outputs(tx, ref, watched))
        return ScannedRange(blocks=tuple(refs), transfers=tuple(transfers))

    def _bodies(self, hashes: list[str]) -> list[Any]:
        """Blocks with their transactions: ``getblock`` verbosity 2, or, on nodes without it
        (Dogecoin Core 1.14 takes only ``verbose: true/false``), verbose blocks and a batch of
        ``getrawtransaction`` for their txids (such a node needs ``-txindex=1``)."""
        if not self._legacy_blocks:
            bodies = self.rpc.batch([("getblock", [h, 2]) for h in hashes], chunk=len(hashes), item_errors=True)
            problems = [b for b in bodies if isinstance(b, RpcError)]
            if not problems:
                return bodies
            if "boolean" not in problems[0].message:
                raise RetryableChainError(f"{self.network}: {problems[0]}")
            self._legacy_blocks = True
        blocks = self.rpc.batch([("getblock", [h, True]) for h in hashes], chunk=len(hashes))
        txids = [str(t) for b in blocks if isinstance(b, dict) for t in b.get("tx") or ()]
        txs = self.rpc.batch([("getrawtransaction", [t, 1]) for t in txids], chunk=MEMPOOL_TX_BATCH)
        by_id = {str(t["txid"]): t for t in txs if isinstance(t, dict)}
        for block in blocks:
            if isinstance(block, dict):
                block["tx"] = [by_id[str(t)] for t in block.get("tx") or ()]
        return list(blocks)

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        [tx] = self.rpc.batch([("getrawtransaction", [tx_hash, True])], item_errors=True)
        if isinstance(tx, RpcError):
            raise ChainError(
                f"{self.network}: transaction {tx_hash} not found ({tx.message}); without -txindex the node "
                "finds only mempool transactions: use `paywatch rescan` over its block range instead"
            )
        if not isinstance(tx, dict) or not tx.get("blockhash"):
            raise ChainError(f"{self.network}: transaction {tx_hash} is not mined yet")
        header = self.rpc.call("getblockheader", [tx["blockhash"], True])
        if not isinstance(header, dict) or int(header.get("confirmations", -1)) < 1:
            raise RetryableChainError(f"{self.network}: the block of {tx_hash} is not on the best chain")
        ref = _ref(header)
        return ScannedRange(blocks=(ref,), transfers=tuple(self._outputs(tx, ref, watched)))

    # --- mempool ---------------------------------------------------------------------------------

    def mempool_view(self, known: Set[str], watched: WatchPredicate, seen_at: datetime, limit: int) -> MempoolView:
        txids, best = self.rpc.batch([("getrawmempool", [False]), ("getbestblockhash", [])])
        if not isinstance(txids, list):
            raise RetryableChainError(f"{self.network}: getrawmempool answered {txids!r:.200}")
        pool = frozenset(str(t) for t in txids)
        fresh = [str(t) for t in txids if t not in known][:limit]
        txs = self.rpc.batch(
            [("getrawtransaction", [t, True]) for t in fresh], chunk=MEMPOOL_TX_BATCH, item_errors=True
        )
        ref = BlockRef(MEMPOOL_BLOCK, "", "", seen_at)
        found: list[tuple[dict[str, Any], list[Transfer]]] = []
        for tx in txs:
            if isinstance(tx, dict):  # an RpcError: the transaction left the pool meanwhile
                outputs = list(self._outputs(tx, ref, watched))
                if outputs:
                    found.append((tx, outputs))
        transfers = [t for _, outputs in self._inherit_rbf(found) for t in outputs]
        return MempoolView(txids=pool, read=tuple(fresh), transfers=tuple(transfers), best_block=str(best))

    def _inherit_rbf(
        self, found: list[tuple[dict[str, Any], list[Transfer]]]
    ) -> Iterator[tuple[dict[str, Any], list[Transfer]]]:
        """Ask the node about the few matching transactions that do not signal BIP125 themselves:
        an unconfirmed parent that signals makes them replaceable too."""
        quiet = [tx for tx, outputs in found if not outputs[0].replaceable]
        entries = self.rpc.batch([("getmempoolentry", [tx["txid"]]) for tx in quiet], item_errors=True)
        inherited = {
            tx["txid"]
            for tx, entry in zip(quiet, entries, strict=True)
            if isinstance(entry, dict) and entry.get("bip125-replaceable")
        }
        for tx, outputs in found:
            if tx["txid"] in inherited:
                outputs = [_replaceable(t) for t in outputs]
            yield tx, outputs

    # --- outputs ---------------------------------------------------------------------------------

    def _outputs(self, tx: dict[str, Any], ref: BlockRef, watched: WatchPredicate) -> Iterable[Transfer]:
        coinbase: bool | None = None
        for output in tx.get("vout") or ():
            address = output_address(output)
            if address is None or not watched(address):
                continue
            if coinbase is None:
                coinbase = is_coinbase(tx)
            yield Transfer(
                network=self.network,
                tx_hash=str(tx["txid"]),
                log_index=int(output["n"]),
                block_number=ref.number,
                block_hash=ref.hash,
                block_time=ref.timestamp,
                from_address="",
                to_address=address,
                asset_key=NATIVE,
                amount=satoshis(output["value"]),
                mempool=ref.number == MEMPOOL_BLOCK,
                replaceable=signals_rbf(tx),
                maturity=self._maturity if coinbase else 0,
            )


def _replaceable(transfer: Transfer) -> Transfer:
    return replace(transfer, replaceable=True)
