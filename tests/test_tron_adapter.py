"""The production Tron adapter against the local TronGrid-compatible node (tests/support/tron_node.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tronpy.keys import to_base58check_address

from paywatch.chains.base import NATIVE, NATIVE_INDEX, ChainAdapter
from paywatch.chains.registry import make_adapter
from paywatch.chains.tron import FETCH_CONCURRENCY, MAX_MEMO_CHARS, TronAdapter, decode_memo
from paywatch.chains.tron_http import API_KEY_HEADER, RetryPolicy
from paywatch.errors import ChainError, RetryableChainError
from tests.support.ports import free_port
from tests.support.tron_node import (
    FAKE_USDT,
    FIXTURES,
    USDT,
    SimTx,
    TronNode,
    address_of,
    logs_from_calldata,
    serve,
    trc20_transfer,
    tron_network,
    trx_transfer,
)

ALICE = address_of("alice")
SHOP = address_of("shop")
OTHER = address_of("someone else")
FAST = RetryPolicy(attempts=4, backoff=0.01, timeout=2.0)


def everyone(_: str) -> bool:
    return True


def only(*addresses: str) -> Any:
    wanted = set(addresses)
    return lambda address: address in wanted


@pytest.fixture
def node() -> Iterator[TronNode]:
    yield from serve()


class FakeTime:
    """A monotonic clock that only moves when the adapter sleeps; records the sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def adapter(node: TronNode, fake: FakeTime) -> Iterator[TronAdapter]:
    a = TronAdapter(tron_network([node.url]), policy=FAST, clock=fake.clock, sleep=fake.sleep)
    yield a
    a.close()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_registry_builds_the_tron_adapter(node: TronNode) -> None:
    adapter: ChainAdapter = make_adapter(tron_network([node.url]))
    assert isinstance(adapter, TronAdapter)
    assert adapter.heights().tip == node.chain.head


# --- recorded chain data ------------------------------------------------------------------------------


def recorded_infos(block: dict[str, Any]) -> list[dict[str, Any]]:
    """Transaction infos for the recorded mainnet block, in the recorded infos' exact shapes."""
    trx = fixture("gettransactioninfobyid_2389719608ed69f7ec3e72c1abb92acaa43b7175f3062f4ebc6e2e02cc82d0d2.json")
    usdt = fixture("gettransactioninfobyid_b69c51db8f9d974e6a38c76852c8ce1adcb682dbacb25ad8ad4f6876121fe9dc.json")
    raw = block["block_header"]["raw_data"]
    infos = []
    for tx in block["transactions"]:
        kind = tx["raw_data"]["contract"][0]["type"]
        info = dict(usdt if kind == "TriggerSmartContract" else trx)
        info.update(id=tx["txID"], blockNumber=raw["number"], blockTimeStamp=raw["timestamp"])
        if kind == "TriggerSmartContract":
            info["log"] = logs_from_calldata(tx)
        infos.append(info)
    return infos


def test_recorded_mainnet_block_gives_its_trx_and_usdt_transfers(fake: FakeTime) -> None:
    block = fixture("getblockbynum_61132092.json")
    with TronNode() as node:
        node.chain.add_recorded(block, recorded_infos(block))
        adapter = TronAdapter(tron_network([node.url]), policy=FAST, clock=fake.clock, sleep=fake.sleep)
        scanned = adapter.fetch_range(61132092, 61132092, everyone)
        assert node.calls() == 2  # the block and its transaction infos, nothing per transaction

    (ref,) = scanned.blocks
    assert ref.hash == block["blockID"] and ref.parent_hash == block["block_header"]["raw_data"]["parentHash"]
    assert ref.timestamp == datetime(2024, 4, 25, 9, 54, 18, tzinfo=UTC)
    native = [t for t in scanned.transfers if t.asset_key == NATIVE]
    tokens = [t for t in scanned.transfers if t.asset_key != NATIVE]
    transfers = [tx for tx in block["transactions"] if tx["raw_data"]["contract"][0]["type"] == "TransferContract"]
    assert len(native) == sum(
        1 for tx in transfers if tx["raw_data"]["contract"][0]["parameter"]["value"].get("amount")
    )
    logs = [log for tx in block["transactions"] for log in logs_from_calldata(tx)]
    assert len(logs) == 112
    assert len(tokens) == sum(1 for log in logs if int(log["data"], 16) > 0)
    assert {t.asset_key for t in tokens} == {USDT}
    first = next(t for t in native if t.tx_hash == "21c3adae72355717ffb7b74ba5957d13edc4cc468b2f3223e96974d0d4e248e4")
    assert (first.amount, first.log_index, first.success) == (292, NATIVE_INDEX, True)
    assert first.from_address == to_base58check_address("4192be94953946c44bca04344209712832d1f56a59")
    assert first.to_address == to_base58check_address("4163c8acf2e9ced9dcf4537cec8c452e4515589311")
    for token in tokens:  # amounts and recipients straight from each call's calldata
        tx = next(tx for tx in block["transactions"] if tx["txID"] == token.tx_hash)
        log = logs_from_calldata(tx)[0]
        assert token.amount == int(log["data"], 16)
        assert token.to_address == to_base58check_address("41" + log["topics"][2][24:])
        assert token.log_index == 0 and token.success and token.memo is None


def test_recorded_transaction_infos_success_and_out_of_energy(node: TronNode, adapter: TronAdapter) -> None:
    """gettransactioninfobyid answers exactly as recorded; the block around them is local."""
    ok = fixture("gettransactioninfobyid_b69c51db8f9d974e6a38c76852c8ce1adcb682dbacb25ad8ad4f6876121fe9dc.json")
    failed = fixture("gettransactioninfobyid_e63a324a43aebfe41273db4f7fdfe325b2257b4f5711595a5fc0f8a75cf1b481.json")
    for recorded, ret in ((ok, "SUCCESS"), (failed, "OUT_OF_ENERGY")):
        sim = trc20_transfer(USDT, ALICE, SHOP, 1)
        body = sim.body("00" * 32, recorded["blockTimeStamp"])
        body["txID"], body["ret"] = recorded["id"], [{"contractRet": ret}]
        block = {
            "blockID": recorded["blockNumber"].to_bytes(8, "big").hex() + "ee" * 24,
            "block_header": {
                "raw_data": {
                    "number": recorded["blockNumber"],
                    "parentHash": "ff" * 32,
                    "timestamp": recorded["blockTimeStamp"],
                    "txTrieRoot": "00" * 32,
                    "witness_address": "41" + "00" * 20,
                    "version": 31,
                }
            },
            "transactions": [body],
        }
        node.chain.add_recorded(block, [recorded])

    found = adapter.transaction_transfers(ok["id"], everyone)
    (transfer,) = found.transfers
    assert transfer.amount == 3_500_000 and transfer.asset_key == USDT and transfer.success
    assert transfer.from_address == to_base58check_address("4160e6e92e57d61a9d68b5d95275cc9667d9e6c7c9")
    assert transfer.to_address == to_base58check_address("41cdae4e9a6287333a3f7df432b050af7b17e79e63")
    assert found.blocks[0].number == 66861993
    assert adapter.transaction_transfers(failed["id"], everyone).transfers == ()
    scanned = adapter.fetch_range(66860010, 66860010, everyone)
    assert scanned.transfers == () and len(scanned.blocks) == 1


def test_simulated_infos_have_the_recorded_shapes(node: TronNode) -> None:
    shapes = {
        "TRX": "gettransactioninfobyid_2389719608ed69f7ec3e72c1abb92acaa43b7175f3062f4ebc6e2e02cc82d0d2.json",
        "SUCCESS": "gettransactioninfobyid_b69c51db8f9d974e6a38c76852c8ce1adcb682dbacb25ad8ad4f6876121fe9dc.json",
        "OUT_OF_ENERGY": "gettransactioninfobyid_e63a324a43aebfe41273db4f7fdfe325b2257b4f5711595a5fc0f8a75cf1b481.json",
    }
    sims = {
        "TRX": trx_transfer(ALICE, SHOP, 5),
        "SUCCESS": trc20_transfer(USDT, ALICE, SHOP, 5),
        "OUT_OF_ENERGY": trc20_transfer(USDT, ALICE, SHOP, 5, result="OUT_OF_ENERGY"),
    }
    stored = node.chain.mine(*sims.values())
    for info, (name, _) in zip(stored.infos, sims.items(), strict=True):
        recorded = fixture(shapes[name])
        assert list(info) == list(recorded)
        assert list(info["receipt"]) == list(recorded["receipt"])
        for mine, theirs in zip(info.get("log", []), recorded.get("log", []), strict=True):
            assert list(mine) == list(theirs) and len(mine["address"]) == len(theirs["address"])


# --- what is reported ----------------------------------------------------------------------------------


def test_trx_and_usdt_transfers_with_memos(node: TronNode, adapter: TronAdapter) -> None:
    stored = node.chain.mine(
        trx_transfer(ALICE, SHOP, 1_500_000, memo="INV7Q2K9XA"),
        trx_transfer(ALICE, OTHER, 7),  # not watched: not reported
        trc20_transfer(USDT, ALICE, SHOP, 25_000_000, memo="  ABCDEFGH23\n"),
        trc20_transfer(USDT, ALICE, OTHER, 9),  # not watched: not reported either
    )
    scanned = adapter.fetch_range(stored.number, stored.number, only(SHOP))
    trx, usdt = scanned.transfers
    assert (trx.asset_key, trx.amount, trx.memo, trx.to_address, trx.from_address) == (
        NATIVE,
        1_500_000,
        "INV7Q2K9XA",
        SHOP,
        ALICE,
    )
    assert trx.block_hash == stored.id and trx.tx_hash == stored.block["transactions"][0]["txID"]
    assert (usdt.asset_key, usdt.amount, usdt.memo, usdt.to_address, usdt.log_index) == (
        USDT,
        25_000_000,
        "ABCDEFGH23",
        SHOP,
        0,
    )
    assert adapter.fetch_range(stored.number, stored.number, only(OTHER)).transfers[0].to_address == OTHER


def test_failed_fake_and_zero_value_transfers_are_not_credited(node: TronNode, adapter: TronAdapter) -> None:
    lying = trc20_transfer(USDT, ALICE, SHOP, 5_000_000)
    lying.info_override = {"receipt": {"result": "REVERT"}}  # block says SUCCESS, the receipt does not
    stored = node.chain.mine(
        trc20_transfer(USDT, ALICE, SHOP, 5_000_000, result="REVERT"),
        trc20_transfer(USDT, ALICE, SHOP, 5_000_000, result="OUT_OF_ENERGY"),
        trc20_transfer(FAKE_USDT, ALICE, SHOP, 5_000_000),
        trc20_transfer(USDT, ALICE, SHOP, 0),
        trx_transfer(ALICE, SHOP, 0),
        lying,
    )
    transfers = adapter.fetch_range(stored.number, stored.number, everyone).transfers
    assert [(t.amount, t.success) for t in transfers] == [(5_000_000, False)]


@pytest.mark.parametrize(
    ("data", "memo"),
    [
        (None, None),
        ("", None),
        ("494e5631", "INV1"),
        ("fffe", None),  # not UTF-8
        ("4142430", None),  # odd length
        ("00414243", None),  # NUL cannot be stored in PostgreSQL text
        ("20200a", None),  # blank
        ("e29c93", "\u2713"),
        ("41" * 300, "A" * MAX_MEMO_CHARS),
    ],
)
def test_decode_memo(data: str | None, memo: str | None) -> None:
    assert decode_memo(data) == memo


# --- heights and coherence -------------------------------------------------------------------------------


def test_heights_tip_and_solidified(node: TronNode, adapter: TronAdapter) -> None:
    node.chain.mine_empty(25)
    node.chain.solidify(node.chain.head - 19)
    heights = adapter.heights()
    assert (heights.tip, heights.final) == (node.chain.head, node.chain.head - 19)
    # one small call for both heights: getnodeinfo's solidityBlock, never a whole block
    assert node.calls("wallet/getnodeinfo") == 1 and node.calls() == 1
    confirmations = TronAdapter(tron_network([node.url], finality=None, confirmations=19), policy=FAST)
    assert confirmations.heights().final is None


def test_solidified_height_from_the_solid_block_when_node_info_lacks_it(node: TronNode, adapter: TronAdapter) -> None:
    """A node whose getnodeinfo has no solidityBlock: the solidified block itself (with transactions
    of every kind in it) gives the height."""
    solid = node.chain.mine(trx_transfer(ALICE, SHOP, 7), trc20_transfer(USDT, ALICE, SHOP, 8))
    node.chain.mine_empty(3)
    node.chain.solidify(solid.number)
    info = node.respond("wallet/getnodeinfo", {})[1]
    answer = json.loads(info)
    del answer["solidityBlock"]
    node.answer_next("wallet/getnodeinfo", answer)
    heights = adapter.heights()
    assert (heights.tip, heights.final) == (node.chain.head, solid.number)
    assert node.calls("walletsolidity/getnowblock") == 1


def test_catch_up_reads_blocks_concurrently(node: TronNode, fake: FakeTime) -> None:
    node.chain.mine_empty(8)
    head = node.chain.head
    node.rendezvous("wallet/getblockbynum", FETCH_CONCURRENCY)  # answered only when 4 are in flight together
    patient = RetryPolicy(attempts=1, timeout=30)
    adapter = TronAdapter(tron_network([node.url]), policy=patient, clock=fake.clock, sleep=fake.sleep)
    try:
        scanned = adapter.fetch_range(head - 7, head, everyone)
    finally:
        adapter.close()
    assert [ref.number for ref in scanned.blocks] == list(range(head - 7, head + 1))
    assert node.calls("wallet/getblockbynum") == 8 and node.calls("wallet/gettransactioninfobyblocknum") == 8


def test_concurrent_reads_share_one_request_budget(node: TronNode) -> None:
    """Four blocks in flight still take one slot of the budget each: with a clock that never moves,
    the 16 requests of 8 blocks wait 0, 1, 2, ... 15 budget intervals, never the same one twice."""
    node.chain.mine_empty(8)
    head = node.chain.head
    node.rendezvous("wallet/getblockbynum", FETCH_CONCURRENCY)  # answered only when 4 are in flight together
    waits: list[float] = []
    adapter = TronAdapter(
        tron_network([node.url], requests_per_second=10),
        policy=RetryPolicy(attempts=1, timeout=30),
        clock=lambda: 1000.0,
        sleep=waits.append,  # records the wait, does not sleep
    )
    try:
        adapter.fetch_range(head - 7, head, everyone)
    finally:
        adapter.close()
    assert node.calls() == 16
    assert sorted(round(wait * 10, 6) for wait in waits) == list(range(1, 16))  # the first request waits not


def test_block_ref_and_unknown_block(node: TronNode, adapter: TronAdapter) -> None:
    stored = node.chain.mine()
    ref = adapter.block_ref(stored.number)
    assert (ref.number, ref.hash, ref.parent_hash) == (stored.number, stored.id, node.chain.block(stored.number - 1).id)
    with pytest.raises(RetryableChainError, match="not on the node"):
        adapter.block_ref(stored.number + 1)
    with pytest.raises(RetryableChainError):
        adapter.fetch_range(stored.number, stored.number + 1, everyone)  # all or nothing


def test_incomplete_transaction_infos_stop_the_scan(node: TronNode, adapter: TronAdapter) -> None:
    stored = node.chain.mine(trc20_transfer(USDT, ALICE, SHOP, 1), trx_transfer(ALICE, SHOP, 2))
    stored.infos.pop()
    node.chain.version += 1
    with pytest.raises(RetryableChainError, match="transaction infos"):
        adapter.fetch_range(stored.number, stored.number, everyone)
    stored.infos.append(dict(stored.infos[0], id="ab" * 32))  # an info of another block version
    node.chain.version += 1
    with pytest.raises(RetryableChainError):
        adapter.fetch_range(stored.number, stored.number, everyone)


def test_an_answer_of_the_wrong_shape_is_a_clear_error(node: TronNode, adapter: TronAdapter) -> None:
    """A field of the wrong type anywhere in a block answer stops the range with an error naming
    it (not retried: the node did answer); nothing of the range is returned."""
    stored = node.chain.mine(trc20_transfer(USDT, ALICE, SHOP, 1), trx_transfer(ALICE, SHOP, 2))
    block = json.loads(json.dumps(stored.block))
    block["transactions"][1]["txID"] = 12345
    node.answer_next("wallet/getblockbynum", block)
    with pytest.raises(ChainError, match=r"unexpected answer.*transactions\[1\]\.txID") as caught:
        adapter.fetch_range(stored.number, stored.number, everyone)
    assert not isinstance(caught.value, RetryableChainError)
    infos = json.loads(json.dumps(stored.infos))
    for info in infos:
        for log in info.get("log", []):
            log["topics"][2] = 7
    node.answer_next("wallet/gettransactioninfobyblocknum", infos)
    with pytest.raises(ChainError, match=r"topics\[2\]"):
        adapter.fetch_range(stored.number, stored.number, everyone)
    node.answer_next("wallet/gettransactioninfobyblocknum", {"unexpected": 1})
    with pytest.raises(ChainError, match="expected a JSON array"):
        adapter.fetch_range(stored.number, stored.number, everyone)
    value = block["transactions"][1]["raw_data"]["contract"][0]["parameter"]["value"]
    block["transactions"][1]["txID"] = stored.block["transactions"][1]["txID"]
    value["amount"] = "2"  # a TRX amount as a string: not guessed at
    node.answer_next("wallet/getblockbynum", block)
    with pytest.raises(ChainError, match=r"TransferContract value.*amount"):
        adapter.fetch_range(stored.number, stored.number, everyone)
    assert sorted(t.amount for t in adapter.fetch_range(stored.number, stored.number, everyone).transfers) == [1, 2]


def test_a_java_tron_error_in_a_block_answer_is_retried(node: TronNode, adapter: TronAdapter) -> None:
    stored = node.chain.mine(trx_transfer(ALICE, SHOP, 5))
    node.fail_next(1, error="class java.lang.NullPointerException : null", path="wallet/getblockbynum")
    node.fail_next(1, error="busy", path="wallet/gettransactioninfobyblocknum")
    assert [t.amount for t in adapter.fetch_range(stored.number, stored.number, everyone).transfers] == [5]
    assert node.calls("wallet/getblockbynum") == 2 and node.calls("wallet/gettransactioninfobyblocknum") == 2


def test_a_lagging_backend_is_read_again(node: TronNode, adapter: TronAdapter, fake: FakeTime) -> None:
    """Behind a load balancer the block can come from one node and its infos from a lagging one."""
    stored = node.chain.mine(trc20_transfer(USDT, ALICE, SHOP, 4))
    node.answer_next("wallet/gettransactioninfobyblocknum", [])
    node.answer_next("wallet/getblockbynum", {})
    scanned = adapter.fetch_range(stored.number, stored.number, everyone)
    assert [t.amount for t in scanned.transfers] == [4]
    assert node.calls("wallet/getblockbynum") == 3 and node.calls("wallet/gettransactioninfobyblocknum") == 2
    assert [s for s in fake.sleeps if s > 0.005] == [FAST.delay(1), FAST.delay(2)]


def test_transaction_lookup(node: TronNode, adapter: TronAdapter) -> None:
    sim: SimTx = trc20_transfer(USDT, ALICE, SHOP, 3, memo="M1")
    stored = node.chain.mine(sim)
    txid = stored.block["transactions"][0]["txID"]
    found = adapter.transaction_transfers("0x" + txid.upper(), everyone)
    assert [(t.tx_hash, t.amount, t.memo, t.asset_key) for t in found.transfers] == [(txid, 3, "M1", USDT)]
    assert node.requests[-2].params == {"value": txid, "visible": True}  # tronpy asks for base58 logs
    assert adapter.transaction_transfers("cd" * 32, everyone).transfers == ()  # unknown: never credited
    with pytest.raises(ChainError):
        adapter.transaction_transfers("nothex", everyone)


# --- transport: key, budget, 429/403, outages, failover ----------------------------------------------------


def test_api_key_header_and_hex_requests(node: TronNode) -> None:
    adapter = TronAdapter(tron_network([{"url": node.url, "api_key": "k-123"}]), policy=FAST)
    adapter.fetch_range(node.chain.head, node.chain.head, everyone)
    assert all(r.headers.get(API_KEY_HEADER) == "k-123" for r in node.requests)
    assert node.requests[0].params == {"num": node.chain.head, "visible": False}


@pytest.mark.parametrize("status", [429, 403])
def test_rate_limited_then_success_honours_retry_after(
    node: TronNode, adapter: TronAdapter, fake: FakeTime, status: int
) -> None:
    node.fail_next(2, status=status, retry_after="2")
    assert adapter.heights().tip == node.chain.head
    assert node.calls("wallet/getnodeinfo") == 3
    assert [round(s, 3) for s in fake.sleeps if s > 0.01] == [2.0, 2.0]  # beside the 1 ms budget spacing


def test_server_errors_and_node_exceptions_are_retried(node: TronNode, adapter: TronAdapter, fake: FakeTime) -> None:
    node.fail_next(1, status=503)
    node.fail_next(1, error="class java.lang.NullPointerException : null")
    assert adapter.heights().tip == node.chain.head
    assert max(fake.sleeps) >= FAST.backoff  # backed off between the attempts on the only URL


def test_retries_exhausted_raise_retryable(node: TronNode, adapter: TronAdapter) -> None:
    node.fail_next(10, status=502)
    with pytest.raises(RetryableChainError, match="no node answered"):
        adapter.heights()
    assert node.calls() == FAST.attempts


def test_refused_everywhere_is_not_retryable(node: TronNode) -> None:
    adapter = TronAdapter(tron_network([node.url, node.url + "/missing"]), policy=FAST, sleep=lambda _: None)
    node.fail_next(1, status=404)
    with pytest.raises(ChainError) as caught:
        adapter.heights()
    assert not isinstance(caught.value, RetryableChainError)


def test_failover_to_the_next_url(node: TronNode, fake: FakeTime) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    adapter = TronAdapter(tron_network([dead, node.url]), policy=FAST, clock=fake.clock, sleep=fake.sleep)
    assert adapter.heights().tip == node.chain.head
    assert adapter.http.calls == 2 and node.calls() == 1  # one refused connection, then the live node
    assert max(fake.sleeps) <= 0.0011  # the budget spacing only: failing over needs no backoff


def test_back_to_the_first_url_after_a_while(node: TronNode, fake: FakeTime) -> None:
    port = free_port()
    adapter = TronAdapter(
        tron_network([f"http://127.0.0.1:{port}", node.url]), policy=FAST, clock=fake.clock, sleep=fake.sleep
    )
    adapter.heights()
    adapter.heights()
    assert adapter.http.calls == 3  # one refused, then the second URL for everything
    primary = TronNode(node.chain, port=port)
    try:
        fake.now += FAST.back_to_primary
        adapter.heights()
        assert adapter.http.calls == 4 and primary.calls() == 1
    finally:
        primary.stop()


def test_node_down_then_back(node: TronNode, adapter: TronAdapter) -> None:
    adapter.heights()  # a kept-alive connection exists
    node.stop()
    with pytest.raises(RetryableChainError):
        adapter.heights()
    node.start()
    assert adapter.heights().tip == node.chain.head


def test_request_budget_spaces_requests(node: TronNode) -> None:
    adapter = TronAdapter(tron_network([node.url], requests_per_second=40), policy=FAST)
    began = time.monotonic()
    for _ in range(9):
        adapter.block_ref(node.chain.head)
    assert time.monotonic() - began >= 8 / 40 - 0.01
