"""The local node answers in java-tron's shapes (checked against the recorded answers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.tron_node import (
    FIXTURES,
    USDT,
    TronNode,
    address_of,
    b58_to_hex,
    block_id,
    hex_to_b58,
    serve,
    transaction_id,
    trc20_transfer,
    trx_transfer,
)

ALICE, BOB = address_of("alice"), address_of("bob")


@pytest.fixture
def node() -> Iterator[TronNode]:
    yield from serve()


def post(node: TronNode, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{node.url}/{path}", json=body or {})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("name", ["getblockbynum_61132092.json", "shasta_getblockbynum_55088560.json"])
def test_ids_are_computed_as_java_tron_does(name: str) -> None:
    block = json.loads((FIXTURES / name).read_text())
    assert block_id(block["block_header"]["raw_data"]) == block["blockID"]
    checked = 0
    for tx in block["transactions"]:
        if tx["raw_data"]["contract"][0]["type"] in ("TransferContract", "TriggerSmartContract"):
            assert transaction_id(tx["raw_data"]) == (tx["txID"], tx["raw_data_hex"])
            checked += 1
    assert checked >= 3


def test_block_shapes_and_missing_blocks(node: TronNode) -> None:
    empty = node.chain.mine()
    full = node.chain.mine(trx_transfer(ALICE, BOB, 5, memo="hi"), trc20_transfer(USDT, ALICE, BOB, 7))
    got_empty = post(node, "wallet/getblockbynum", {"num": empty.number})
    assert "transactions" not in got_empty and got_empty["blockID"] == empty.id
    got = post(node, "wallet/getblockbynum", {"num": full.number})
    assert got["block_header"]["raw_data"]["parentHash"] == empty.id
    trx, usdt = got["transactions"]
    assert trx["raw_data"]["data"] == b"hi".hex() and trx["ret"] == [{"contractRet": "SUCCESS"}]
    assert transaction_id(trx["raw_data"]) == (trx["txID"], trx["raw_data_hex"])
    assert usdt["raw_data"]["contract"][0]["parameter"]["value"]["contract_address"] == b58_to_hex(USDT)
    assert post(node, "wallet/getblockbynum", {"num": full.number + 1}) == {}
    assert post(node, "wallet/gettransactioninfobyblocknum", {"num": full.number + 1}) == []
    assert post(node, "wallet/gettransactioninfobyblocknum", {"num": 0}) == {}
    assert post(node, "wallet/gettransactioninfobyblocknum", {"num": empty.number}) == []
    infos = post(node, "wallet/gettransactioninfobyblocknum", {"num": full.number})
    assert [i["id"] for i in infos] == [trx["txID"], usdt["txID"]]
    assert infos[1]["log"][0]["address"] == b58_to_hex(USDT)[2:]
    by_get = httpx.get(f"{node.url}/wallet/getblockbynum", params={"num": full.number}).json()
    assert by_get == got


def test_nodeinfo_and_solidity_endpoints(node: TronNode) -> None:
    node.chain.mine_empty(5)
    node.chain.solidify(node.chain.head - 3)
    head, solid = node.chain.block(node.chain.head), node.chain.block(node.chain.head - 3)
    assert head is not None and solid is not None
    info = post(node, "wallet/getnodeinfo")
    assert info["block"] == f"Num:{head.number},ID:{head.id}"
    assert info["solidityBlock"] == f"Num:{solid.number},ID:{solid.id}"
    assert "configNodeInfo" in info and "machineInfo" in info
    assert post(node, "walletsolidity/getnowblock")["blockID"] == solid.id
    assert post(node, "wallet/getnowblock")["blockID"] == head.id
    assert post(node, "walletsolidity/getblockbynum", {"num": head.number}) == {}
    with pytest.raises(ValueError, match="solidified"):
        node.chain.fork(solid.number)


def test_visible_true_gives_base58(node: TronNode) -> None:
    stored = node.chain.mine(trc20_transfer(USDT, ALICE, BOB, 7))
    block = post(node, "wallet/getblockbynum", {"num": stored.number, "visible": True})
    value = block["transactions"][0]["raw_data"]["contract"][0]["parameter"]["value"]
    assert (value["owner_address"], value["contract_address"]) == (ALICE, USDT)
    assert block["block_header"]["raw_data"]["witness_address"].startswith("T")
    info = post(node, "wallet/gettransactioninfobyid", {"value": stored.infos[0]["id"], "visible": True})
    assert info["log"][0]["address"] == USDT and info["contract_address"] == USDT
    assert hex_to_b58(b58_to_hex(ALICE)) == ALICE


def test_faults_and_outage(node: TronNode) -> None:
    node.fail_next(1, status=429, retry_after="3")
    response = httpx.post(f"{node.url}/wallet/getnodeinfo", json={})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
    node.fail_next(1, path="wallet/getblockbynum", status=503)
    assert httpx.post(f"{node.url}/wallet/getnodeinfo", json={}).status_code == 200
    assert httpx.post(f"{node.url}/wallet/getblockbynum", json={"num": 1}).status_code == 503
    node.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{node.url}/wallet/getnodeinfo", json={})
    node.start()
    assert "block" in post(node, "wallet/getnodeinfo")
