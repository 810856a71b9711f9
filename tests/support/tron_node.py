"""A local TronGrid-compatible node: a real HTTP server on 127.0.0.1 serving an in-memory chain.

Written from the java-tron HTTP API documentation (tronprotocol/documentation-en, ``docs/api/http``)
and the recorded answers of real nodes in ``tests/fixtures/tron``:

* ``POST|GET /wallet/getnowblock``, ``/wallet/getblockbynum {"num"}``: ``protocol.Block`` with
  ``blockID``, ``block_header.raw_data`` and ``transactions`` (the key is absent for an empty block);
  ``{}`` for a block that does not exist;
* ``/walletsolidity/getnowblock`` and ``/walletsolidity/getblockbynum``: the same, up to the
  solidified height only;
* ``/wallet/getnodeinfo``: the recorded mainnet answer with ``block`` and ``solidityBlock`` as
  ``"Num:<n>,ID:<blockID>"`` (``visible`` has no effect there);
* ``/wallet/gettransactioninfobyblocknum {"num"}``: a JSON array of ``TransactionInfo``, one per
  transaction, ``[]`` for an empty or unknown block;
* ``/wallet/gettransactioninfobyid {"value"}`` (and ``/walletsolidity/...``): one ``TransactionInfo``,
  ``{}`` when unknown.

Addresses are ``41``-prefixed hex and byte fields hex unless the request says ``"visible": true``;
then address fields are base58check and ``log[].address`` gets ``41`` prepended and base58 too.
Transaction ids, ``raw_data_hex`` and block ids are computed as java-tron does (sha256 of the
protobuf encoding; a block id starts with the block number); ``test_tron_node.py`` checks the encoder
against the recorded mainnet block. ``txTrieRoot`` and signatures are placeholders (nothing reads them).

Faults: :meth:`TronNode.fail_next` answers the next requests with 429 (and ``Retry-After``), 403,
5xx or a java-tron ``{"Error": ...}``; :meth:`TronNode.stop` / :meth:`TronNode.start` take the
node down (connections refused and kept-alive ones dropped) and bring it back on the same port.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import base58

from paywatch.config import NetworkConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tron"
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRANSFER_SELECTOR = "a9059cbb"
TRANSFER_FROM_SELECTOR = "23b872dd"
TYPE_URL = "type.googleapis.com/protocol."
CONTRACT_TYPES = {"TransferContract": 1, "TriggerSmartContract": 31}
ADDRESS_FIELDS = frozenset(
    {
        "owner_address",
        "to_address",
        "contract_address",
        "witness_address",
        "receiver_address",
        "caller_address",
        "transferTo_address",
        "origin_address",
    }
)
BLOCK_MS = 3000
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"  # mainnet USDT (TRC-20)
FAKE_USDT = "TXLAQ63Xg1NAzckPwKHvzw7CSEmLMEqcdj"  # Nile USDT: a contract also named USDT, not configured


# --- addresses ---------------------------------------------------------------------------------


def b58_to_hex(address: str) -> str:
    """base58check -> 41-prefixed hex (the node's ``visible: false`` form)."""
    return base58.b58decode_check(address).hex()


def hex_to_b58(address: str) -> str:
    return base58.b58encode_check(bytes.fromhex(address)).decode()


def address_of(seed: str) -> str:
    """A deterministic, valid Tron address (base58) for test actors."""
    return hex_to_b58("41" + hashlib.sha256(seed.encode()).hexdigest()[:40])


# --- the protobuf encoding java-tron hashes ---------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value if value else b""


def encode_contract_value(kind: str, value: dict[str, Any]) -> bytes:
    """``TransferContract`` / ``TriggerSmartContract`` parameter values (hex form) as protobuf."""
    if kind == "TransferContract":
        return (
            _bytes_field(1, bytes.fromhex(value["owner_address"]))
            + _bytes_field(2, bytes.fromhex(value["to_address"]))
            + _int_field(3, value.get("amount", 0))
        )
    if kind == "TriggerSmartContract":
        return (
            _bytes_field(1, bytes.fromhex(value["owner_address"]))
            + _bytes_field(2, bytes.fromhex(value["contract_address"]))
            + _int_field(3, value.get("call_value", 0))
            + _bytes_field(4, bytes.fromhex(value.get("data", "")))
            + _int_field(5, value.get("call_token_value", 0))
            + _int_field(6, value.get("token_id", 0))
        )
    raise ValueError(f"no encoder for {kind}")


def encode_raw_transaction(raw: dict[str, Any]) -> bytes:
    """``Transaction.raw`` as protobuf (fields in number order, as java-tron serialises it)."""
    contracts = b""
    for contract in raw["contract"]:
        kind = contract["type"]
        any_value = _bytes_field(1, contract["parameter"]["type_url"].encode()) + _bytes_field(
            2, encode_contract_value(kind, contract["parameter"]["value"])
        )
        body = _int_field(1, CONTRACT_TYPES[kind]) + _bytes_field(2, any_value)
        contracts += _bytes_field(11, body)
    return (
        _bytes_field(1, bytes.fromhex(raw["ref_block_bytes"]))
        + _bytes_field(4, bytes.fromhex(raw["ref_block_hash"]))
        + _int_field(8, raw["expiration"])
        + _bytes_field(10, bytes.fromhex(raw.get("data", "")))
        + contracts
        + _int_field(14, raw.get("timestamp", 0))
        + _int_field(18, raw.get("fee_limit", 0))
    )


def transaction_id(raw: dict[str, Any]) -> tuple[str, str]:
    """(txID, raw_data_hex) of a transaction's ``raw_data``."""
    encoded = encode_raw_transaction(raw)
    return hashlib.sha256(encoded).hexdigest(), encoded.hex()


def block_id(header_raw: dict[str, Any]) -> str:
    """The block id: the 8-byte block number, then the tail of sha256(BlockHeader.raw)."""
    encoded = (
        _int_field(1, header_raw["timestamp"])
        + _bytes_field(2, bytes.fromhex(header_raw["txTrieRoot"]))
        + _bytes_field(3, bytes.fromhex(header_raw["parentHash"]))
        + _int_field(7, header_raw["number"])
        + _bytes_field(9, bytes.fromhex(header_raw["witness_address"]))
        + _int_field(10, header_raw["version"])
    )
    return header_raw["number"].to_bytes(8, "big").hex() + hashlib.sha256(encoded).hexdigest()[16:]


# --- transactions ------------------------------------------------------------------------------------


@dataclass
class SimTx:
    """One transaction to put in a block: its body (hex form) and how its TransactionInfo reads."""

    kind: str
    value: dict[str, Any]
    memo: bytes | None = None
    contract_ret: str = "SUCCESS"
    receipt_result: str | None = None  # None: no receipt.result (TRX transfers)
    logs: list[dict[str, Any]] = field(default_factory=list)
    fee_limit: int | None = None
    nonce: int = 0
    info_override: dict[str, Any] = field(default_factory=dict)
    _body: dict[str, Any] | None = field(default=None, repr=False)

    def body(self, ref_block: str, timestamp_ms: int) -> dict[str, Any]:
        """The signed transaction; built once, so a fork can include the very same transaction again."""
        if self._body is None:
            self._body = self._build(ref_block, timestamp_ms)
        return self._body

    def _build(self, ref_block: str, timestamp_ms: int) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "contract": [{"parameter": {"value": self.value, "type_url": TYPE_URL + self.kind}, "type": self.kind}],
            "ref_block_bytes": ref_block[12:16],
            "ref_block_hash": ref_block[16:32],
            "expiration": timestamp_ms + 60_000,
        }
        if self.memo is not None:
            raw["data"] = self.memo.hex()
        if self.fee_limit is not None:
            raw["fee_limit"] = self.fee_limit
        raw["timestamp"] = timestamp_ms - 3000 + self.nonce
        txid, raw_hex = transaction_id(raw)
        return {
            "ret": [{"contractRet": self.contract_ret}],
            "signature": [hashlib.sha512(txid.encode()).hexdigest()[:130]],
            "txID": txid,
            "raw_data": raw,
            "raw_data_hex": raw_hex,
        }

    def info(self, txid: str, number: int, timestamp_ms: int) -> dict[str, Any]:
        """Shaped like the recorded infos: TRX transfer, successful and failed USDT calls."""
        info: dict[str, Any] = {"id": txid}
        if self.kind == "TransferContract":
            info.update(blockNumber=number, blockTimeStamp=timestamp_ms, contractResult=[""])
            info["receipt"] = {"net_usage": 265}
        elif self.receipt_result == "SUCCESS":
            info.update(fee=345000, blockNumber=number, blockTimeStamp=timestamp_ms)
            info["contractResult"] = ["0" * 63 + "1"]
            info["contract_address"] = self.value["contract_address"]
            info["receipt"] = {
                "energy_usage": 64285,
                "energy_usage_total": 64285,
                "net_fee": 345000,
                "result": "SUCCESS",
                "energy_penalty_total": 49635,
            }
            if self.logs:
                info["log"] = copy.deepcopy(self.logs)
        else:
            info.update(fee=16500120, blockNumber=number, blockTimeStamp=timestamp_ms, contractResult=[""])
            info["contract_address"] = self.value["contract_address"]
            info["receipt"] = {
                "energy_fee": 16500120,
                "energy_usage_total": 78572,
                "net_usage": 345,
                "result": self.receipt_result,
                "energy_penalty_total": 25905,
            }
            info["result"] = "FAILED"
            info["resMessage"] = f"{self.receipt_result} opcode executed".encode().hex()
        info.update(self.info_override)
        return info


_counter = iter(range(1, 1 << 62))


def trx_transfer(sender: str, to: str, amount: int, *, memo: str | bytes | None = None) -> SimTx:
    """A ``TransferContract`` of ``amount`` sun (base58 addresses in, hex in the body)."""
    value = {"amount": amount, "owner_address": b58_to_hex(sender), "to_address": b58_to_hex(to)}
    if amount == 0:
        del value["amount"]  # proto3: a zero is not printed
    return SimTx("TransferContract", value, memo=_memo(memo), nonce=next(_counter))


def transfer_log(contract: str, sender: str, to: str, amount: int) -> dict[str, Any]:
    """The ``Transfer`` event as ``log[]`` holds it: 20-byte contract address, 32-byte topics."""
    return {
        "address": b58_to_hex(contract)[2:],
        "topics": [TRANSFER_TOPIC, "0" * 24 + b58_to_hex(sender)[2:], "0" * 24 + b58_to_hex(to)[2:]],
        "data": f"{amount:064x}",
    }


def trc20_transfer(
    contract: str,
    sender: str,
    to: str,
    amount: int,
    *,
    memo: str | bytes | None = None,
    result: str = "SUCCESS",
) -> SimTx:
    """A ``transfer(to, amount)`` call of a TRC-20 ``contract``; ``result`` REVERT/OUT_OF_ENERGY fails it."""
    data = TRANSFER_SELECTOR + "0" * 24 + b58_to_hex(to)[2:] + f"{amount:064x}"
    value = {"data": data, "owner_address": b58_to_hex(sender), "contract_address": b58_to_hex(contract)}
    logs = [transfer_log(contract, sender, to, amount)] if result == "SUCCESS" else []
    return SimTx(
        "TriggerSmartContract",
        value,
        memo=_memo(memo),
        contract_ret=result,
        receipt_result=result,
        logs=logs,
        fee_limit=150_000_000,
        nonce=next(_counter),
    )


def _memo(memo: str | bytes | None) -> bytes | None:
    return memo.encode() if isinstance(memo, str) else memo


def logs_from_calldata(tx: dict[str, Any]) -> list[dict[str, Any]]:
    """The Transfer log a successful ``transfer``/``transferFrom`` call of a recorded transaction emits."""
    contract_call = tx["raw_data"]["contract"][0]
    if contract_call["type"] != "TriggerSmartContract":
        return []
    value = contract_call["parameter"]["value"]
    data = value.get("data", "")
    contract = value["contract_address"][2:]
    if data.startswith(TRANSFER_SELECTOR) and len(data) == 8 + 128:
        sender, to, amount = value["owner_address"][2:], data[32:72], data[72:136]
    elif data.startswith(TRANSFER_FROM_SELECTOR) and len(data) == 8 + 192:
        sender, to, amount = data[32:72], data[96:136], data[136:200]
    else:
        return []
    return [{"address": contract, "topics": [TRANSFER_TOPIC, "0" * 24 + sender, "0" * 24 + to], "data": amount}]


# --- the chain --------------------------------------------------------------------------------------


@dataclass
class StoredBlock:
    block: dict[str, Any]
    infos: list[dict[str, Any]]

    @property
    def number(self) -> int:
        return int(self.block["block_header"]["raw_data"]["number"])

    @property
    def id(self) -> str:
        return str(self.block["blockID"])


def block_time_of(stored: StoredBlock) -> datetime:
    """A stored block's timestamp as an aware UTC datetime."""
    ms = int(stored.block["block_header"]["raw_data"]["timestamp"])
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)


class TronChain:
    """Blocks by number (one canonical chain), the solidified height, and forks above it."""

    def __init__(self, first: int = 1000, *, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
        self.blocks: dict[int, StoredBlock] = {}
        self.solidified = first
        self.lock = threading.RLock()
        self.version = 0  # bumps on every change (answers are cached per version)
        genesis_raw = {
            "number": first,
            "txTrieRoot": "00" * 32,
            "witness_address": "41" + "00" * 20,
            "parentHash": (first - 1).to_bytes(8, "big").hex() + "11" * 24,
            "version": 31,
            "timestamp": int(start.timestamp() * 1000),
        }
        self._store(self._header_block(genesis_raw, []), [])

    # reading
    @property
    def head(self) -> int:
        return max(self.blocks)

    def block(self, number: int) -> StoredBlock | None:
        return self.blocks.get(number)

    def find_tx(self, txid: str) -> tuple[StoredBlock, int] | None:
        for stored in self.blocks.values():
            for index, info in enumerate(stored.infos):
                if info["id"] == txid:
                    return stored, index
        return None

    # writing
    def mine(self, *txs: SimTx, at: datetime | None = None, witness: str = "41" + "ab" * 20) -> StoredBlock:
        """Append a block holding ``txs`` (at ``at`` or 3 s after the head)."""
        with self.lock:
            parent = self.blocks[self.head]
            parent_ms = int(parent.block["block_header"]["raw_data"]["timestamp"])
            timestamp = int(at.timestamp() * 1000) if at else parent_ms + BLOCK_MS
            bodies = [tx.body(parent.id, timestamp) for tx in txs]
            number = parent.number + 1
            infos = [tx.info(body["txID"], number, timestamp) for tx, body in zip(txs, bodies, strict=True)]
            trie = hashlib.sha256("".join(b["txID"] for b in bodies).encode()).hexdigest()
            raw = {
                "number": number,
                "txTrieRoot": trie,
                "witness_address": witness,
                "parentHash": parent.id,
                "version": 31,
                "timestamp": timestamp,
            }
            return self._store(self._header_block(raw, bodies), infos)

    def mine_empty(self, count: int) -> None:
        for _ in range(count):
            self.mine()

    def add_recorded(self, block: dict[str, Any], infos: list[dict[str, Any]]) -> StoredBlock:
        """Serve a recorded block as is (for parsing tests); it need not link to the others."""
        with self.lock:
            return self._store(copy.deepcopy(block), infos)

    def solidify(self, number: int) -> None:
        with self.lock:
            if number > self.head:
                raise ValueError("cannot solidify beyond the head")
            self.solidified = max(self.solidified, number)
            self.version += 1

    def fork(self, first: int, *blocks: Iterable[SimTx]) -> None:
        """Drop blocks ``first..head`` and mine ``blocks`` instead (another witness, other hashes)."""
        with self.lock:
            if first <= self.solidified:
                raise ValueError(f"block {first} is solidified; a fork cannot replace it")
            for number in [n for n in self.blocks if n >= first]:
                del self.blocks[number]
            self.version += 1
            for txs in blocks:
                self.mine(*txs, witness="41" + "cd" * 20)

    def _header_block(self, raw: dict[str, Any], bodies: list[dict[str, Any]]) -> dict[str, Any]:
        block: dict[str, Any] = {
            "blockID": block_id(raw),
            "block_header": {"raw_data": raw, "witness_signature": "00" * 65},
        }
        if bodies:
            block["transactions"] = bodies
        return block

    def _store(self, block: dict[str, Any], infos: list[dict[str, Any]]) -> StoredBlock:
        stored = StoredBlock(block, infos)
        self.blocks[stored.number] = stored
        self.version += 1
        return stored


# --- visible: true --------------------------------------------------------------------------------


def visible_form(value: Any) -> Any:
    """Rewrite hex address fields as base58check, as java-tron does for ``"visible": true``."""
    if isinstance(value, list):
        return [visible_form(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ADDRESS_FIELDS and isinstance(item, str) and len(item) == 42 and item.startswith("41"):
            out[key] = hex_to_b58(item)
        elif key == "log" and isinstance(item, list):
            out[key] = [
                {**entry, "address": hex_to_b58("41" + entry["address"])} if "address" in entry else entry
                for entry in item
            ]
        else:
            out[key] = visible_form(item)
    return out


# --- the HTTP server ------------------------------------------------------------------------------------


@dataclass
class Fault:
    status: int
    headers: dict[str, str]
    body: bytes
    path: str | None = None  # only requests to this path (None: any)
    skip: int = 0  # let this many matching requests through first


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    node: TronNode


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        self.server.node._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.node._connections.discard(self.connection)

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if "num" in params:
            params["num"] = int(params["num"])
        if "visible" in params:
            params["visible"] = params["visible"] == "true"
        self._answer(split.path, params)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            params = json.loads(raw) if raw.strip() else {}
        except ValueError:
            self._send(200, {}, json.dumps({"Error": "class org.tron.json.JSONException : bad json"}).encode())
            return
        self._answer(urlsplit(self.path).path, params)

    def _answer(self, path: str, params: dict[str, Any]) -> None:
        node = self.server.node
        node._record(path, params, dict(self.headers))
        if not node._meet(path.strip("/")):
            self._send(503, {}, b"")
            return
        fault = node._take_fault(path.strip("/"))
        if fault is not None:
            self._send(fault.status, fault.headers, fault.body)
            return
        status, body = node.respond(path.strip("/"), params)
        self._send(status, {}, body)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Request:
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


class TronNode:
    """The HTTP server around a :class:`TronChain`; ``url`` is its base URL."""

    def __init__(self, chain: TronChain | None = None, *, port: int = 0) -> None:
        self.chain = chain or TronChain()
        self.requests: list[Request] = []
        self.record_requests = True
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._cache: dict[tuple[str, int, bool], bytes] = {}
        self._cache_version = -1
        self._nodeinfo = json.loads((FIXTURES / "getnodeinfo_mainnet.json").read_text())
        self._rendezvous: tuple[str, threading.Barrier] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle
    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.node = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go down: refuse new connections and cut the kept-alive ones."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TronNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults
    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: str | None = None,
        error: str | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """The next ``count`` requests (to ``path``, after ``after`` of them passed) get ``status``
        (with Retry-After), or a java-tron ``200 {"Error": error}``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if error is not None:
            status, body = 200, json.dumps({"Error": error}).encode()
        elif status == 403:
            body = b'{"Error":"Exceed the user daily usage (100000), the maximum query frequency is 1 time per second"}'
        else:
            body = b'{"Error":"too many requests"}' if status == 429 else b""
        faults = [Fault(status, headers, body, path, after if i == 0 else 0) for i in range(count)]
        with self._lock:
            self._faults.extend(faults)

    def answer_next(self, path: str, body: Any, count: int = 1) -> None:
        """The next ``count`` requests to ``path`` get ``200 body`` (a lagging or forked backend)."""
        encoded = json.dumps(body).encode()
        with self._lock:
            self._faults.extend(Fault(200, {}, encoded, path) for _ in range(count))

    def clear_faults(self) -> None:
        """Forget every fault not served yet."""
        with self._lock:
            self._faults.clear()

    def rendezvous(self, path: str, parties: int, timeout: float = 10.0) -> None:
        """Hold requests to ``path`` until ``parties`` of them are in flight together (proof of
        concurrent reads); a client that sends them one at a time gets 503 after ``timeout``."""
        self._rendezvous = (path, threading.Barrier(parties, timeout=timeout))

    def _meet(self, path: str) -> bool:
        """Wait at the rendezvous of ``path`` (if any); False when it broke (not enough in flight)."""
        meeting = self._rendezvous
        if meeting is None or meeting[0] != path:
            return True
        try:
            meeting[1].wait()
        except threading.BrokenBarrierError:
            return False
        return True

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is not None and fault.path != path:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                return self._faults.pop(i)
            return None

    def _record(self, path: str, params: dict[str, Any], headers: dict[str, str]) -> None:
        if self.record_requests:
            with self._lock:
                self.requests.append(Request(path, params, headers))

    def calls(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r.path.strip("/") == path)

    # answers
    def respond(self, path: str, params: dict[str, Any]) -> tuple[int, bytes]:
        chain = self.chain
        visible = bool(params.get("visible", False))
        with chain.lock:
            if self._cache_version != chain.version:
                self._cache.clear()
                self._cache_version = chain.version
            if path in (
                "wallet/getblockbynum",
                "walletsolidity/getblockbynum",
                "wallet/gettransactioninfobyblocknum",
                "walletsolidity/gettransactioninfobyblocknum",
            ):
                number = int(params.get("num", 0))
                limit = chain.solidified if path.startswith("walletsolidity") else chain.head
                key = (path.split("/")[1], number, visible)
                if key not in self._cache:
                    stored = chain.block(number) if number <= limit else None
                    if path.endswith("getblockbynum"):
                        body: Any = stored.block if stored else {}
                    else:
                        body = stored.infos if stored else ({} if number <= 0 else [])
                    self._cache[key] = json.dumps(visible_form(body) if visible else body).encode()
                return 200, self._cache[key]
            if path in ("wallet/getnowblock", "walletsolidity/getnowblock"):
                number = chain.solidified if path.startswith("walletsolidity") else chain.head
                stored = chain.block(number)
                body = stored.block if stored else {}
                return 200, json.dumps(visible_form(body) if visible else body).encode()
            if path in ("wallet/getnodeinfo", "walletsolidity/getnodeinfo", "monitor/getnodeinfo"):
                info = dict(self._nodeinfo)
                head, solid = chain.block(chain.head), chain.block(chain.solidified)
                assert head is not None and solid is not None
                info["block"] = f"Num:{head.number},ID:{head.id}"
                info["solidityBlock"] = f"Num:{solid.number},ID:{solid.id}"
                info["beginSyncNum"] = head.number - 19
                return 200, json.dumps(info).encode()
            if path in ("wallet/gettransactioninfobyid", "walletsolidity/gettransactioninfobyid"):
                value = str(params.get("value", ""))
                found = chain.find_tx(value)
                if found is None or (path.startswith("walletsolidity") and found[0].number > chain.solidified):
                    return 200, b"{}"
                info = found[0].infos[found[1]]
                return 200, json.dumps(visible_form(info) if visible else info).encode()
        return 404, b""


def serve(chain: TronChain | None = None) -> Iterator[TronNode]:
    """A pytest-fixture body: a running node, stopped afterwards."""
    node = TronNode(chain)
    try:
        yield node
    finally:
        node.stop()


def tron_network(urls: list[str] | list[str | dict[str, Any]], **overrides: Any) -> NetworkConfig:
    """A validated tron NetworkConfig for the test node (USDT = the mainnet contract's address)."""
    body: dict[str, Any] = {
        "name": "tron",
        "family": "tron",
        "rpc_urls": urls,
        "finality": "solidified",
        "requests_per_second": 1000,
        "assets": {"TRX": {"native": True, "decimals": 6}, "USDT": {"contract": USDT, "decimals": 6}},
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)
