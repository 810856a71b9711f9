"""A real anvil node for tests and benchmarks, plus helpers to deploy tokens and send payments.

``anvil`` comes from npm (``npm install @foundry-rs/anvil``; see the README set-up). The node
listens on a free 127.0.0.1 port and is stopped (and waited for) afterwards.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from paywatch.config import NetworkConfig
from tests.conftest import EVM_XPUB

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
CONTRACTS = Path(__file__).resolve().parent / "contracts" / "compiled"
CHAIN_ID = 31337
#: anvil's default accounts come from the public "test test ... junk" mnemonic: never real funds.
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def artifact(name: str) -> tuple[list[dict[str, Any]], str]:
    """ABI and bytecode of ``TestToken`` or ``FalseToken`` from tests/contracts/compiled."""
    stem = CONTRACTS / f"tests_contracts_TestTokens_sol_{name}"
    abi = json.loads(stem.with_suffix(".abi").read_text())
    return abi, "0x" + stem.with_suffix(".bin").read_text().strip()


class AnvilNode:
    """One anvil process on a free loopback port; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        if not ANVIL.exists():
            pytest.skip(f"anvil is not installed at {ANVIL} (npm install @foundry-rs/anvil)")
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=10)

    def start(self) -> AnvilNode:
        self.proc = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port), "--silent", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.rpc("eth_chainId")
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"anvil exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("anvil did not start within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self._http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        reply.raise_for_status()
        body = reply.json()
        if body.get("error"):
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]


class Chain:
    """Test-side actions on an anvil node: deploy, pay, mine, snapshot, reorg."""

    def __init__(self, node: AnvilNode) -> None:
        self.node = node
        self.w3 = Web3(HTTPProvider(node.url))
        self.accounts: list[str] = list(self.w3.eth.accounts)
        self.payer = self.accounts[1]

    # chain state
    def height(self) -> int:
        return int(self.node.rpc("eth_blockNumber"), 16)

    def time(self) -> datetime:
        block = self.node.rpc("eth_getBlockByNumber", "latest", False)
        return datetime.fromtimestamp(int(block["timestamp"], 16), UTC)

    def mine(self, blocks: int = 1) -> None:
        self.node.rpc("anvil_mine", hex(blocks))

    def automine(self, on: bool) -> None:
        self.node.rpc("evm_setAutomine", on)

    def snapshot(self) -> str:
        return str(self.node.rpc("evm_snapshot"))

    def revert(self, snapshot: str) -> None:
        assert self.node.rpc("evm_revert", snapshot) is True

    def next_timestamp(self, when: datetime) -> None:
        self.node.rpc("evm_setNextBlockTimestamp", int(when.timestamp()))

    def reorg(self, depth: int, txs: Sequence[tuple[str, int]] = ()) -> None:
        """Replace the last ``depth`` blocks; ``txs`` are (raw signed tx, block offset) pairs."""
        self.node.rpc("anvil_reorg", depth, [[raw, offset] for raw, offset in txs])

    # payments
    def wait(self, tx_hash: str) -> str:
        """anvil mines asynchronously after answering: wait until the transaction is in a block."""
        deadline = time.monotonic() + 10
        while self.node.rpc("eth_getTransactionReceipt", tx_hash) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tx_hash} was not mined within 10 s")
            time.sleep(0.01)
        return tx_hash

    def send_raw(self, raw: str, *, wait: bool = True) -> str:
        tx_hash = str(self.node.rpc("eth_sendRawTransaction", raw)).lower()
        return self.wait(tx_hash) if wait else tx_hash

    def send_eth(
        self, to: str, value: int, *, sender: str | None = None, gas: int | None = None, wait: bool = True
    ) -> str:
        tx: dict[str, Any] = {"from": sender or self.payer, "to": to, "value": hex(value)}
        if gas is not None:
            tx["gas"] = hex(gas)
        tx_hash = str(self.node.rpc("eth_sendTransaction", tx)).lower()
        return self.wait(tx_hash) if wait else tx_hash

    def signed_eth(self, to: str, value: int, nonce: int) -> tuple[str, str]:
        """A raw signed native transfer from account 0 (same hash wherever it is mined)."""
        tx = {
            "to": Web3.to_checksum_address(to),
            "value": value,
            "gas": 21_000,
            "nonce": nonce,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
            "chainId": CHAIN_ID,
            "type": 2,
        }
        signed = Account.sign_transaction(tx, KEY0)
        return "0x" + signed.raw_transaction.hex().removeprefix("0x"), "0x" + signed.hash.hex().removeprefix("0x")

    def nonce(self, address: str) -> int:
        return int(self.node.rpc("eth_getTransactionCount", address, "pending"), 16)

    def deploy(self, name: str, *args: Any) -> str:
        abi, bytecode = artifact(name)
        contract = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        tx_hash = contract.constructor(*args).transact({"from": self.accounts[0]})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 1
        return str(receipt["contractAddress"]).lower()

    def token_transfer(
        self, token: str, to: str, amount: int, *, sender: str | None = None, gas: int | None = None, wait: bool = True
    ) -> str:
        abi, _ = artifact("TestToken")
        contract = self.w3.eth.contract(address=Web3.to_checksum_address(token), abi=abi)
        params: dict[str, Any] = {"from": sender or self.payer}
        if gas is not None:
            params["gas"] = gas
        sent = contract.functions.transfer(Web3.to_checksum_address(to), amount).transact(params)  # type: ignore[arg-type]
        tx_hash = "0x" + sent.hex().removeprefix("0x")
        return self.wait(tx_hash) if wait else tx_hash

    def receipt_status(self, tx_hash: str) -> int:
        return int(self.node.rpc("eth_getTransactionReceipt", tx_hash)["status"], 16)


def evm_network(url: str | Sequence[str], tokens: dict[str, str], **overrides: Any) -> NetworkConfig:
    """A NetworkConfig for anvil: ETH plus the given tokens (6 decimals)."""
    assets: dict[str, Any] = {"ETH": {"native": True, "decimals": 18}}
    assets.update({symbol: {"contract": address, "decimals": 6} for symbol, address in tokens.items()})
    body: dict[str, Any] = {
        "name": "anvil",
        "family": "evm",
        "chain_id": CHAIN_ID,
        "rpc_urls": [url] if isinstance(url, str) else list(url),
        "confirmations": 3,
        "requests_per_second": 1000,  # a local node; production keeps the configured limit
        "xpub": EVM_XPUB,
        "assets": assets,
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)


@pytest.fixture(scope="module", name="anvil_node")
def anvil_node_fixture() -> Iterator[AnvilNode]:
    node = AnvilNode().start()
    try:
        yield node
    finally:
        node.close()
