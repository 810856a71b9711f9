"""A real regtest litecoind for the tests and the benchmark (Debian's ``litecoind``, skipped when absent).

Each node gets a temporary datadir, ``regtest=1 listen=0 dnsseed=0 fallbackfee=0.0002`` and a
free RPC port; authentication is the node's cookie file (as a production node would use it).
``-vbparams=mweb:0:0`` keeps MWEB off unless ``mweb=True`` (MWEB then activates at height 432
and block 432 needs a peg-in). The node wallet "w" pays the invoices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from paywatch.chains.utxo_rpc import loads
from paywatch.config import NetworkConfig
from paywatch.devnet.node import free_port

#: "abandon ... about" (public BIP-39 test mnemonic): m/84'/1'/0' as vpub and as tpub
VPUB = "vpub5Y6cjg78GGuNLsaPhmYsiw4gYX3HoQiRBiSwDaBXKUafCt9bNwWQiitDk5VZ5BVxYnQdwoTyXSs2JHRPAgjAvtbBrf8ZhDYe2jWAqvZVnsc"
TPUB = "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
LITECOIND = shutil.which("litecoind") or "/usr/lib/litecoin/litecoind"
COIN = Decimal(100_000_000)


def find_litecoind() -> str:
    if not Path(LITECOIND).exists():
        pytest.skip("litecoind is not installed (apt-get install -y litecoind; see docs/utxo.md)")
    return LITECOIND


class RpcFailed(Exception):
    """A JSON-RPC error answer from the test node."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


class LtcNode:
    """One litecoind process on 127.0.0.1; ``rpc()`` talks to it with its cookie."""

    def __init__(self, *, mweb: bool = False, datadir: Path | None = None) -> None:
        self.binary = find_litecoind()
        self.datadir = datadir or Path(tempfile.mkdtemp(prefix="ltc-regtest-"))
        self.port = free_port()
        self.mweb = mweb
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cookie_file(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    def start(self, *extra: str, load_wallet: bool = True) -> LtcNode:
        args = [
            self.binary,
            f"-datadir={self.datadir}",
            "-regtest=1",
            "-listen=0",
            "-dnsseed=0",
            "-fallbackfee=0.0002",
            f"-rpcport={self.port}",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-server=1",
            "-txindex=1",
            "-rpcworkqueue=64",
            "-rpcservertimeout=2",  # idle keep-alive connections would hold up the shutdown for 30 s
            "-mempoolreplacement=1",  # Litecoin Core replaces nothing by default; the RBF tests need it
            "-printtoconsole=0",
        ]
        if not self.mweb:
            args.append("-vbparams=mweb:0:0")
        args.extend(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"litecoind exited: {err}")
            try:
                self.rpc("getblockcount")
                break
            except (requests.ConnectionError, OSError, RpcFailed):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if load_wallet and (self.datadir / "regtest" / "wallets" / "w").exists():
            self.load_wallet()  # a restart: wallets do not load themselves
        return self

    def load_wallet(self) -> None:
        try:
            self.rpc("loadwallet", "w")
        except RpcFailed as exc:
            if exc.code != -35:  # already loaded
                raise

    def stop(self) -> None:
        """Stop the node and wait for it (the datadir stays, so it can start again)."""
        if self.proc is None:
            return
        try:
            self.rpc("stop")
        except Exception:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    # --- RPC -------------------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        user, _, password = self.cookie_file.read_text().strip().partition(":")
        url = self.url + (f"/wallet/{wallet}" if wallet else "")
        body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}, default=str)
        # a fresh connection per call: the node drops idle keep-alive ones after -rpcservertimeout
        headers = {"Connection": "close"}
        answer = loads(requests.post(url, data=body, auth=(user, password), headers=headers, timeout=120).content)
        if answer.get("error"):
            raise RpcFailed(method, answer["error"])
        return answer["result"]

    def w(self, method: str, *params: Any) -> Any:
        """A call to the test wallet "w"."""
        return self.rpc(method, *params, wallet="w")

    # --- chain helpers ---------------------------------------------------------------------------

    def setup_wallet(self, blocks: int = 101) -> None:
        self.rpc("createwallet", "w")
        self.mine(blocks)

    def mine(self, n: int = 1) -> list[str]:
        return list(self.rpc("generatetoaddress", n, self.w("getnewaddress")))

    def mine_empty(self, n: int = 1) -> list[str]:
        """Blocks without mempool transactions (they stay in the mempool)."""
        address = self.w("getnewaddress")
        return [self.rpc("generateblock", address, [])["hash"] for _ in range(n)]

    @property
    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def pay(self, address: str, amount: str | Decimal, *, replaceable: bool = False) -> str:
        """Send ``amount`` LTC to ``address`` from the wallet; the txid."""
        return str(self.w("sendtoaddress", address, str(amount), "", "", False, replaceable))

    def pay_many(self, outputs: dict[str, str | Decimal]) -> str:
        return str(self.w("sendmany", "", {a: str(v) for a, v in outputs.items()}))

    def pay_twice(self, address: str, first: str, second: str) -> str:
        """One transaction with two outputs to ``address`` (the wallet refuses duplicate addresses,
        so a placeholder output of the same script length is swapped for it before signing)."""
        placeholder = self.w("getnewaddress", "", "bech32")
        raw = str(self.rpc("createrawtransaction", [], [{address: first}, {placeholder: second}]))
        ours, other = self._script(address), self._script(placeholder)
        assert len(ours) == len(other) and raw.count(other) == 1
        funded = self.w("fundrawtransaction", raw.replace(other, ours), {"changePosition": 2})["hex"]
        signed = self.w("signrawtransactionwithwallet", funded)["hex"]
        return str(self.rpc("sendrawtransaction", signed))

    def _script(self, address: str) -> str:
        return str(self.rpc("validateaddress", address)["scriptPubKey"])

    def replace_paying_less(self, txid: str, address: str, new_amount: str) -> str:
        """A BIP125 replacement of ``txid``: same inputs, less to ``address``, the rest to fees."""
        tx = self.w("getrawtransaction", txid, True)
        inputs = [{"txid": i["txid"], "vout": i["vout"], "sequence": 0xFFFFFFFD} for i in tx["vin"]]
        outputs = []
        for out in tx["vout"]:
            out_address = out["scriptPubKey"].get("address") or out["scriptPubKey"]["addresses"][0]
            outputs.append({out_address: str(new_amount) if out_address == address else str(out["value"])})
        raw = self.rpc("createrawtransaction", inputs, outputs)
        signed = self.w("signrawtransactionwithwallet", raw)["hex"]
        return str(self.rpc("sendrawtransaction", signed, 0))

    def conflicting(self, txid: str) -> str:
        """A signed transaction spending ``txid``'s inputs back to the wallet (not broadcast): its hex."""
        tx = self.w("getrawtransaction", txid, True)
        total = Decimal(0)
        prevtxs = []
        for i in tx["vin"]:
            spent = self.w("getrawtransaction", i["txid"], True)["vout"][i["vout"]]
            total += spent["value"]
            prevtxs.append(
                {
                    "txid": i["txid"],
                    "vout": i["vout"],
                    "scriptPubKey": spent["scriptPubKey"]["hex"],
                    "amount": spent["value"],
                }
            )
        inputs = [{"txid": i["txid"], "vout": i["vout"]} for i in tx["vin"]]
        raw = self.rpc("createrawtransaction", inputs, [{self.w("getnewaddress"): str(total - Decimal("0.001"))}])
        signed = self.w("signrawtransactionwithwallet", raw, prevtxs)  # the pool sees those coins as spent
        assert signed["complete"], signed
        return str(signed["hex"])

    def generate_with(self, *raw_txs: str) -> str:
        return str(self.rpc("generateblock", self.w("getnewaddress"), list(raw_txs))["hash"])


def ltc_network(node: LtcNode, **overrides: Any) -> NetworkConfig:
    """A NetworkConfig for the regtest node: LTC, the test vpub, cookie auth."""
    body: dict[str, Any] = {
        "name": "ltc",
        "family": "utxo",
        "chain": "litecoin",
        "net": "regtest",
        "rpc_urls": [node.url],
        "rpc_cookie_file": str(node.cookie_file),
        "confirmations": 3,
        "requests_per_second": 1000,
        "poll_interval": 1,
        "xpub": VPUB,
        "assets": {"LTC": {"native": True, "decimals": 8}},
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)
