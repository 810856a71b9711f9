"""Bitcoin and Dogecoin through the production adapter and transport, against a local JSON-RPC
server that answers with the response shapes of tests/fixtures/bitcoin/ (see its README: shapes
from Bitcoin Core's RPC documentation, not recorded from a node)."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from paywatch.chains.evm_rpc import RpcError
from paywatch.chains.utxo import UtxoAdapter, satoshis
from paywatch.chains.utxo_rpc import loads
from paywatch.config import NetworkConfig
from paywatch.errors import ChainError, RetryableChainError

FIXTURES = Path(__file__).parent / "fixtures" / "bitcoin"
ZPUB = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
DGUB = "dgub8rUhDtD3YFGZTUphBfpBbzvFxSMKQXYLzg87Me2ta78r2SdVLmypBUkkxrrn9RTnchsyiJSkHZyLWxD13ibBiXtuFWktBoDaGaZjQUBLNLs"
A0, A1 = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"


def fixture(name: str) -> Any:
    return loads((FIXTURES / name).read_bytes())


class FixtureNode:
    """A JSON-RPC 1.0 server with HTTP basic auth answering from the fixture files."""

    def __init__(
        self, blocks: list[dict[str, Any]], *, user: str = "rpc", password: str = "s3cret", legacy: bool = False
    ) -> None:
        self.blocks = {int(b["height"]): b for b in blocks}
        self.legacy = legacy  # Dogecoin Core 1.14: getblock takes only `verbose: true/false`
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.mempool: list[str] = fixture("getrawmempool.json")
        self.txs = {
            t["txid"]: t
            for t in (fixture("getrawtransaction_mempool_rbf.json"), fixture("getrawtransaction_mempool_child.json"))
        }
        self.calls: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Authorization") != node.auth:
                    self.send_response(401)
                    self.end_headers()
                    return
                request = json.loads(body)
                if isinstance(request, list):
                    answer: Any = [node.answer(r) for r in request]
                    status = 200
                else:
                    answer = node.answer(request)
                    status = 500 if answer["error"] else 200
                data = _dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request["method"], request.get("params", [])
        self.calls.append(method)
        by_hash = {b["hash"]: b for b in self.blocks.values()}
        result: Any = None
        error = None
        if method == "getblockcount":
            result = max(self.blocks)
        elif method == "getblockhash":
            result = self.blocks[params[0]]["hash"]
        elif method == "getblock" and self.legacy and not isinstance(params[1], bool):
            error = {"code": -1, "message": "JSON value is not a boolean as expected"}
        elif method == "getblock" and self.legacy:
            block = by_hash[params[0]]
            result = {**block, "tx": [tx["txid"] for tx in block["tx"]]}
        elif method == "getblock":
            result = by_hash[params[0]]
        elif method == "getblockheader":
            result = {k: v for k, v in by_hash[params[0]].items() if k != "tx"}
        elif method == "getbestblockhash":
            result = self.blocks[max(self.blocks)]["hash"]
        elif method == "getrawmempool":
            result = self.mempool
        elif method == "getrawtransaction":
            in_blocks = {tx["txid"]: tx for b in self.blocks.values() for tx in b["tx"]}
            result = self.txs.get(params[0]) or in_blocks.get(params[0])
            if result is None:
                error = {"code": -5, "message": "No such mempool or blockchain transaction"}
        elif method == "getmempoolentry":
            result = fixture("getmempoolentry_child.json") if params[0] in self.txs else None
            if result is None:
                error = {"code": -5, "message": "Transaction not in mempool"}
        else:
            error = {"code": -32601, "message": "Method not found"}
        return {"result": None if error else result, "error": error, "id": request.get("id")}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _dumps(value: Any) -> bytes:
    """JSON with Decimals printed as the node prints numbers (never through a float)."""
    text = json.dumps(value, default=lambda o: f"__RAW__{o}" if isinstance(o, Decimal) else str(o))
    return re.sub(r'"__RAW__([^"]+)"', r"\1", text).encode()


@pytest.fixture
def btc_node() -> Iterator[FixtureNode]:
    node = FixtureNode([fixture("getblock_880000_verbosity2.json")])
    yield node
    node.close()


def btc(url: str, **overrides: Any) -> NetworkConfig:
    body: dict[str, Any] = {
        "name": "bitcoin",
        "family": "utxo",
        "chain": "bitcoin",
        "rpc_urls": [url],
        "xpub": ZPUB,
        "requests_per_second": 1000,
        "assets": {"BTC": {"native": True, "decimals": 8}},
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)


def test_bitcoin_block_outputs_exact_satoshis(btc_node: FixtureNode) -> None:
    url = btc_node.url.replace("http://", "http://rpc:s3cret@")
    adapter = UtxoAdapter(btc(url), sleep=lambda _s: None)
    assert adapter.heights().tip == 880000
    watched = {A0, A1}
    scanned = adapter.fetch_range(880000, 880000, watched.__contains__)
    [ref] = scanned.blocks
    assert ref.number == 880000 and ref.timestamp == datetime.fromtimestamp(1737400000, UTC)
    got = [(t.to_address, t.log_index, t.amount, t.replaceable, t.maturity, t.mempool) for t in scanned.transfers]
    assert got == [
        (A0, 1, 29_000_000, True, 0, False),  # float(0.29) * 1e8 would truncate to 28999999
        (A1, 2, 12_345, True, 0, False),
        (A1, 3, 546, True, 0, False),
    ]
    assert adapter.rpc.round_trips == 3  # tip, one batch of hashes, one batch of bodies
    assert adapter.block_ref(880000) == ref


def test_bitcoin_coinbase_output_carries_maturity(btc_node: FixtureNode) -> None:
    adapter = UtxoAdapter(btc(btc_node.url.replace("http://", "http://rpc:s3cret@")), sleep=lambda _s: None)
    coinbase = "bc1qzyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3fyz3ka"
    [t] = adapter.fetch_range(880000, 880000, {coinbase}.__contains__).transfers
    assert (t.log_index, t.amount, t.maturity) == (0, 317_412_345, 100)


def test_bitcoin_mempool_view_rbf_explicit_and_inherited(btc_node: FixtureNode) -> None:
    adapter = UtxoAdapter(btc(btc_node.url.replace("http://", "http://rpc:s3cret@")), sleep=lambda _s: None)
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    view = adapter.mempool_view(set(), {A0, A1}.__contains__, seen, limit=10)
    assert len(view.txids) == 3 and len(view.read) == 3  # one of them vanished before it was read
    by_address = {t.to_address: t for t in view.transfers}
    assert by_address[A0].replaceable and by_address[A0].amount == 10_000_000  # sequence 0xfffffffd
    assert by_address[A1].replaceable and by_address[A1].amount == 5_000_000  # inherited, from getmempoolentry
    assert all(t.mempool and t.block_number == -1 and t.block_time == seen for t in view.transfers)
    again = adapter.mempool_view(set(view.read), {A0, A1}.__contains__, seen, limit=10)
    assert again.read == () and again.transfers == ()
    capped = adapter.mempool_view(set(), {A0, A1}.__contains__, seen, limit=1)
    assert len(capped.read) == 1


def test_credentials_and_errors(btc_node: FixtureNode) -> None:
    wrong = UtxoAdapter(btc(btc_node.url.replace("http://", "http://rpc:wrong@")), sleep=lambda _s: None, attempts=1)
    with pytest.raises(RetryableChainError) as caught:
        wrong.heights()
    message = str(caught.value)
    assert "HTTP 401" in message and "wrong" not in message and "rpc:" not in message
    good = UtxoAdapter(btc(btc_node.url.replace("http://", "http://rpc:s3cret@")), sleep=lambda _s: None)
    with pytest.raises(ChainError, match="not found"):
        good.transaction_transfers("ab" * 32, lambda _a: True)
    with pytest.raises(RpcError):
        good.rpc.call("nosuchmethod", [])


def test_cookie_file(btc_node: FixtureNode, tmp_path: Path) -> None:
    cookie = tmp_path / ".cookie"
    cookie.write_text("rpc:s3cret")
    adapter = UtxoAdapter(btc(btc_node.url, rpc_cookie_file=str(cookie)), sleep=lambda _s: None)
    assert adapter.heights().tip == 880000


@pytest.mark.parametrize("legacy", [False, True], ids=["getblock-verbosity-2", "dogecoin-1.14-verbose-bool"])
def test_dogecoin_addresses_list_shape(legacy: bool) -> None:
    node = FixtureNode([fixture("dogecoin_getblock_5500000_verbosity2.json")], user="u", password="p", legacy=legacy)
    try:
        network = NetworkConfig.model_validate(
            {
                "name": "dogecoin",
                "family": "utxo",
                "chain": "dogecoin",
                "rpc_urls": [node.url.replace("http://", "http://u:p@")],
                "xpub": DGUB,
                "assets": {"DOGE": {"native": True, "decimals": 8}},
            }
        )
        assert network.address_type == "p2pkh"
        from paywatch.addresses import network_address

        first, second = network_address(network, 1), network_address(network, 0)
        adapter = UtxoAdapter(network, sleep=lambda _s: None)
        transfers = adapter.fetch_range(5500000, 5500000, {first, second}.__contains__).transfers
        assert [(t.to_address, t.amount) for t in transfers] == [(first, 42_069_000_000), (second, 10_000_000)]
        if legacy:  # the verbosity-2 refusal is remembered: later ranges go straight to the fallback
            adapter.fetch_range(5500000, 5500000, {first}.__contains__)
            assert node.calls.count("getblock") == 3 and node.calls.count("getrawtransaction") == 2
    finally:
        node.close()


@pytest.mark.parametrize(
    ("raw", "sats"),
    [
        ("0.29000000", 29_000_000),
        ("0.1", 10_000_000),
        ("20999999.97690000", 2_099_999_997_690_000),
        ("1e-8", 1),
        ("0", 0),
    ],
)
def test_satoshis_are_exact(raw: str, sats: int) -> None:
    assert satoshis(loads(raw)) == sats


@pytest.mark.parametrize("raw", ["0.000000001", "-1.0"])
def test_satoshis_refuse_fractions_and_negatives(raw: str) -> None:
    with pytest.raises(ChainError):
        satoshis(loads(raw))


def test_satoshis_refuse_floats() -> None:
    with pytest.raises(ChainError, match="exact amount"):
        satoshis(0.29)
