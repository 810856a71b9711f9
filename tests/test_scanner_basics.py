"""The scanner's own contract: where it starts, catch-up, the heights it records, the index cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture, evm_network  # noqa: F401

pytestmark = pytest.mark.anvil

ETH = 10**18


def test_first_start_at_the_tip_records_heights(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    h = Harness(engine, db_url, tmp_path, d.chain, evm_network(d.node.url, {"USDT": d.usdt}))
    [result] = h.scan()
    tip = d.chain.height()
    assert (result.start, result.end, result.caught_up) == (tip, tip, True)
    state = h.state()
    assert (state.cursor_height, state.tip_height, state.final_height, state.last_error) == (tip, tip, None, None)
    assert state.tip_time == d.chain.time() and state.last_scan_at is not None
    assert h.scanned_numbers() == [tip]
    [idle] = h.scan()
    assert idle.start is None and idle.caught_up


def test_start_block_and_uncapped_catch_up(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    begin = d.chain.height() + 1
    network = evm_network(d.node.url, {"USDT": d.usdt}, start_block=begin, batch_blocks=40)
    h = Harness(engine, db_url, tmp_path, d.chain, network)
    inv = h.invoice("ETH", "1")
    d.chain.mine(60)
    d.chain.send_eth(inv.address, ETH)  # a payment made while paywatch was down
    d.chain.mine(59)
    results = h.scan()
    assert [(r.start, r.end) for r in results] == [
        (begin, begin + 39),
        (begin + 40, begin + 79),
        (begin + 80, begin + 119),
    ]
    assert [r.caught_up for r in results] == [False, False, True]
    assert h.scanned_numbers() == list(range(begin, begin + 120))
    assert h.get(inv.id).status == "COMPLETED"


def test_watch_index_is_read_again_only_when_invoices_change(h: Harness, deployed: Deployed) -> None:
    """A new invoice is added to the index (its rows only); the index is never built afresh."""
    builds, refreshes = h.scanner.watch.builds, h.scanner.watch.refreshes
    for _ in range(3):
        h.chain.mine(1)
        h.scan()
    assert (h.scanner.watch.builds, h.scanner.watch.refreshes) == (builds, refreshes)
    inv = h.invoice("USDT", "1")
    h.chain.token_transfer(deployed.usdt, inv.address, 10**6)
    h.scan()
    assert (h.scanner.watch.builds, h.scanner.watch.refreshes) == (builds, refreshes + 1)
    assert [p.invoice_id for p in h.payments()] == [inv.id]


def test_prefetched_range_and_an_invoice_created_between_steps(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    begin = d.chain.height() + 1
    network = evm_network(d.node.url, {"USDT": d.usdt}, start_block=begin, batch_blocks=5)
    h = Harness(engine, db_url, tmp_path, d.chain, network)
    early = h.invoice("ETH", "1")
    d.chain.send_eth(early.address, ETH)  # block `begin`
    d.chain.mine(11)
    first = h.scanner.step()  # begin..begin+4; begin+5..begin+9 is being read in the background
    assert not first.caught_up and h.scanner.watch.builds == 1
    late = h.invoice("USDT", "1")  # created after the prefetch started, paid in a later block
    d.chain.token_transfer(d.usdt, late.address, 10**6)
    d.chain.mine(2)
    results = [first, *h.scan()]
    assert [r.start for r in results][:3] == [begin, begin + 5, begin + 10]
    assert h.scanned_numbers() == list(range(begin, d.chain.height() + 1))
    assert {p.invoice_id for p in h.payments()} == {early.id, late.id}
    assert (h.scanner.watch.builds, h.scanner.watch.refreshes) == (1, 1)
    h.scanner.close()
