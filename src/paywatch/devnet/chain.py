"""Actions on an anvil chain: deploy the test tokens, pay, mine, snapshot, reorg.

anvil's accounts come from the public "test test ... junk" mnemonic: never real funds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import HTTPProvider, Web3

from paywatch.devnet.node import CHAIN_ID, AnvilNode

CONTRACTS = Path(__file__).resolve().parent / "contracts" / "build"
#: private key of anvil's account 0 (public test mnemonic), used to sign raw transactions for reorgs
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@cache
def artifact(name: str) -> tuple[list[dict[str, Any]], str]:
    """ABI and bytecode of a contract in ``TestTokens.sol`` or ``Payers.sol`` (compiled offline;
    see contracts/README.md)."""
    [abi_file] = CONTRACTS.glob(f"contracts_*_sol_{name}.abi")
    stem = abi_file.with_suffix("")
    abi = json.loads(stem.with_suffix(".abi").read_text())
    return abi, "0x" + stem.with_suffix(".bin").read_text().strip()


class Chain:
    """Deploy, pay, mine, snapshot and reorg on one anvil node."""

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
        if self.node.rpc("evm_revert", snapshot) is not True:
            raise RuntimeError(f"evm_revert({snapshot}) failed")

    def next_timestamp(self, when: datetime) -> None:
        self.node.rpc("evm_setNextBlockTimestamp", int(when.timestamp()))

    def reorg(self, depth: int, txs: Sequence[tuple[str, int]] = ()) -> None:
        """Replace the last ``depth`` blocks; ``txs`` are (raw signed tx, block offset) pairs."""
        self.node.rpc("anvil_reorg", depth, [[raw, offset] for raw, offset in txs])

    def increase_time(self, seconds: int) -> None:
        self.node.rpc("evm_increaseTime", seconds)

    # payments
    def wait(self, tx_hash: str, timeout: float = 30.0) -> str:
        """anvil mines asynchronously after answering (or on a timer): wait until the tx is in a block."""
        deadline = time.monotonic() + timeout
        while self.node.rpc("eth_getTransactionReceipt", tx_hash) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tx_hash} was not mined within {timeout:.0f} s")
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

    def signed_token_transfer(self, token: str, to: str, amount: int, nonce: int) -> tuple[str, str]:
        """A raw signed ERC-20 ``transfer`` from account 0 (same hash wherever it is mined)."""
        abi, _ = artifact("TestToken")
        contract = self.w3.eth.contract(address=Web3.to_checksum_address(token), abi=abi)
        data = contract.encode_abi("transfer", [Web3.to_checksum_address(to), amount])
        tx = {
            "to": Web3.to_checksum_address(token),
            "value": 0,
            "data": data,
            "gas": 100_000,
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
        if receipt["status"] != 1:
            raise RuntimeError(f"deploying {name} failed")
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
