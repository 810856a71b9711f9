"""An EVM node that fabricates shapes: the scan step fails with a clear error, nothing is stored.

A proxy in front of anvil rewrites the answers for the blocks after the cursor; a real scanner
step on a real database must raise, leave the cursor where it was, credit nothing and record no
unmatched transfer. With the honest node back, the same payment is credited once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from paywatch.domain.status import InvoiceStatus
from paywatch.errors import ChainError
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture, evm_network  # noqa: F401
from tests.support.evm_proxy import RpcProxy
from tests.support.tron_node import tron_network

pytestmark = [pytest.mark.attack("hostile_input"), pytest.mark.anvil]

USDT = 10**6
Edit = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Edit:
    def edit(item: dict[str, Any]) -> None:
        item[key] = value

    return edit


def _drop(key: str) -> Edit:
    def edit(item: dict[str, Any]) -> None:
        item.pop(key, None)

    return edit


def _truncate(key: str) -> Edit:
    def edit(item: dict[str, Any]) -> None:
        item[key] = str(item[key])[:42]

    return edit


#: (what is fabricated, the edit of each Transfer log or of each new block body, the error expected)
LOG_FORMS: dict[str, tuple[Edit, str]] = {
    "log tx hash of 20 bytes": (_truncate("transactionHash"), "transactionHash is not 32 bytes of hex"),
    "log tx hash not hex": (_set("transactionHash", "0x" + "zz" * 32), "transactionHash is not 32 bytes of hex"),
    "log tx hash a number": (_set("transactionHash", 12345), "transactionHash is not 32 bytes of hex"),
    "log tx hash missing": (_drop("transactionHash"), "transactionHash is not 32 bytes of hex"),
    "log block hash differs": (_set("blockHash", "0x" + "ab" * 32), "blockHash is not the hash of the block body"),
}
BODY_FORMS: dict[str, tuple[Edit, str]] = {
    "body hash short": (_truncate("hash"), "hash is not 32 bytes of hex"),
    "body hash missing": (_drop("hash"), "hash is not 32 bytes of hex"),
    "body parentHash not hex": (_set("parentHash", "0x" + "g" * 64), "parentHash is not 32 bytes of hex"),
    "body number not hex": (_set("number", "0xZZ"), "block number is not a hex quantity"),
    "body number negative": (_set("number", -1), "block number is not a hex quantity"),
}


def _rewriter(base: int, kind: str, edit: Edit, foreign: str) -> Callable[[str, list[Any], Any], Any]:
    def rewrite(method: str, params: list[Any], answer: Any) -> Any:
        result = answer.get("result") if isinstance(answer, dict) else None
        if kind == "log" and method == "eth_getLogs" and isinstance(result, list):
            for log in result:
                edit(log)
        if kind == "foreign" and method == "eth_getLogs" and isinstance(result, list):
            result.extend(
                {**log, "address": foreign, "logIndex": hex(int(log["logIndex"], 16) + 100)} for log in list(result)
            )
        block = str(params[0]) if method == "eth_getBlockByNumber" else ""
        if kind == "body" and isinstance(result, dict) and block.startswith("0x") and int(block, 16) > base:
            edit(result)
        return answer

    return rewrite


CASES = [
    *[pytest.param("log", edit, match, id=name) for name, (edit, match) in LOG_FORMS.items()],
    *[pytest.param("body", edit, match, id=name) for name, (edit, match) in BODY_FORMS.items()],
    pytest.param("foreign", None, "a log of a contract that was not requested", id="log of an unrequested contract"),
]


@pytest.mark.parametrize(("kind", "edit", "match"), CASES)
def test_fabricated_answers_fail_the_step_and_store_nothing(
    kind: str, edit: Edit | None, match: str, chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    with RpcProxy(d.node.url) as proxy:
        network = evm_network(proxy.url, {"USDT": d.usdt})
        h = Harness(engine, db_url, tmp_path, d.chain, network, prefetch=False)
        h.scan()
        base = h.state().cursor_height
        assert base is not None
        inv = h.invoice("USDT", "5")
        d.chain.token_transfer(d.usdt, inv.address, 5 * USDT)
        d.chain.mine(3)
        proxy.rewrite = _rewriter(base, kind, edit or _set("x", None), d.fake_usdt)
        with pytest.raises(ChainError, match=f"^anvil: .*{match}"):
            h.scanner.step()
        assert h.state().cursor_height == base
        assert h.payments() == [] and h.unmatched() == []
        assert max(h.scanned_numbers()) <= base
        assert h.get(inv.id).status == InvoiceStatus.PENDING
        proxy.rewrite = None  # the honest node again: the same payment is credited once
        h.scan()
        assert [p.amount for p in h.payments(inv.id)] == [5 * USDT]


def test_quorum_two_refuses_a_range_a_second_node_disagrees_on(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    with RpcProxy(d.node.url) as first, RpcProxy(d.node.url) as second:
        network = evm_network([first.url, second.url], {"USDT": d.usdt}, quorum=2)
        h = Harness(engine, db_url, tmp_path, d.chain, network, prefetch=False)
        h.scan()
        base = h.state().cursor_height
        assert base is not None
        inv = h.invoice("USDT", "5")
        d.chain.token_transfer(d.usdt, inv.address, 5 * USDT)
        d.chain.mine(3)
        # the first node invents a chain of its own: consistent hashes, parent links and logs
        forged = {n: "0x" + f"{n:064x}" for n in range(base + 1, base + 10)}

        def fabricate(method: str, params: list[Any], answer: Any) -> Any:
            result = answer.get("result") if isinstance(answer, dict) else None
            if method == "eth_getBlockByNumber" and isinstance(result, dict) and int(result["number"], 16) > base:
                number = int(result["number"], 16)
                result["hash"] = forged[number]
                result["parentHash"] = forged.get(number - 1, result["parentHash"])
            if method == "eth_getLogs" and isinstance(result, list):
                for log in result:
                    log["blockHash"] = forged[int(log["blockNumber"], 16)]
            if method == "eth_getTransactionReceipt" and isinstance(result, dict):
                result["blockHash"] = forged[int(result["blockNumber"], 16)]
            return answer

        first.rewrite = fabricate
        with pytest.raises(
            ChainError, match=rf"^anvil: quorum: http://127\.0\.0\.1:\d+#\w+ disagrees on the hash of block {base + 1}"
        ):
            h.scanner.step()
        assert h.state().cursor_height == base and h.payments() == [] and h.unmatched() == []
        first.rewrite = None
        h.scan()
        assert [p.amount for p in h.payments(inv.id)] == [5 * USDT]


@pytest.mark.parametrize(
    ("overrides", "family"), [({"quorum": 2}, "evm"), ({"quorum": 3}, "evm"), ({"quorum": 2}, "tron")]
)
def test_quorum_is_validated(overrides: dict[str, Any], family: str) -> None:
    with pytest.raises(ValidationError, match="quorum"):
        if family == "evm":
            evm_network("http://127.0.0.1:1", {}, **overrides)  # one URL only
        else:
            tron_network(["http://127.0.0.1:1", "http://127.0.0.1:2"], **overrides)
