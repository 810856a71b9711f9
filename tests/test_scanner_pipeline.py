"""The scanner's background reads: a step reads its range while its watch index is built, and the
next range while it stores its own; a failed store or index build moves no cursor and skips nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from paywatch.chains.base import BlockRef, ChainAdapter, ScannedRange, WatchPredicate
from paywatch.chains.evm import EvmAdapter
from paywatch.domain.matching import WatchIndex
from paywatch.domain.status import Heights
from paywatch.ledger import Ledger
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture, evm_network  # noqa: F401
from tests.support.worker_procs import wait_for

pytestmark = pytest.mark.anvil

ETH = 10**18
USDT = 10**6


class ReadLog:
    """The real EvmAdapter, noting every range whose read has begun (in order)."""

    def __init__(self, inner: ChainAdapter) -> None:
        self.inner = inner
        self.begun: list[tuple[int, int]] = []

    def heights(self) -> Heights:
        return self.inner.heights()

    def block_ref(self, number: int) -> BlockRef:
        return self.inner.block_ref(number)

    def transaction_transfers(self, tx_hash: str, watched: WatchPredicate) -> ScannedRange:
        return self.inner.transaction_transfers(tx_hash, watched)

    def fetch_range(self, start: int, end: int, watched: WatchPredicate) -> ScannedRange:
        self.begun.append((start, end))
        return self.inner.fetch_range(start, end, watched)


class StoreHook(Ledger):
    """The real ledger; ``hook(low)`` runs inside the store of a range starting at ``low``."""

    def __init__(self, ledger: Ledger, hook: Callable[[int], None]) -> None:
        super().__init__(ledger.networks)
        self.hook = hook

    def orphan_replaced(self, session: Session, network: str, canonical: Mapping[int, str], now: datetime) -> set[str]:
        self.hook(min(canonical))
        return super().orphan_replaced(session, network, canonical, now)


def pipeline(d: Deployed, engine: Engine, db_url: str, tmp_path: Path) -> tuple[Harness, ReadLog, int]:
    """A harness scanning 5 blocks per step from the next block, through a ReadLog."""
    begin = d.chain.height() + 1
    network = evm_network(d.node.url, {"USDT": d.usdt}, start_block=begin, batch_blocks=5)
    reads = ReadLog(EvmAdapter(network, sleep=lambda _s: None))
    return Harness(engine, db_url, tmp_path, d.chain, network, adapter=reads), reads, begin


def test_the_next_range_is_read_while_this_one_is_stored(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    h, reads, begin = pipeline(d, engine, db_url, tmp_path)
    eth, usdt = h.invoice("ETH", "1"), h.invoice("USDT", "1")
    d.chain.send_eth(eth.address, ETH)  # block begin
    d.chain.mine(6)
    d.chain.token_transfer(d.usdt, usdt.address, USDT)  # block begin + 7, in the second range
    d.chain.mine(4)

    def wait_for_the_next_read(low: int) -> None:
        if low == begin:  # the first range is being stored: the second one must be read meanwhile
            wait_for("the second range's read to begin", lambda: (begin + 5, begin + 9) in reads.begun, timeout=30)

    h.scanner.ledger = StoreHook(h.ledger, wait_for_the_next_read)
    results = h.scan()
    h.scanner.close()
    assert [(r.start, r.end) for r in results] == [(begin, begin + 4), (begin + 5, begin + 9), (begin + 10, begin + 11)]
    assert reads.begun == [(r.start, r.end) for r in results]  # every range read once
    assert h.scanned_numbers() == list(range(begin, begin + 12))
    assert sorted(p.invoice_id for p in h.payments()) == sorted([eth.id, usdt.id])
    assert h.get(eth.id).status == h.get(usdt.id).status == "COMPLETED"


def test_a_failed_store_moves_no_cursor_and_the_range_read_ahead_is_read_again(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    h, reads, begin = pipeline(d, engine, db_url, tmp_path)
    eth, usdt = h.invoice("ETH", "1"), h.invoice("USDT", "1")
    d.chain.mine(6)
    d.chain.send_eth(eth.address, ETH)  # block begin + 6: the range whose store fails
    d.chain.mine(4)
    d.chain.token_transfer(d.usdt, usdt.address, USDT)  # block begin + 11: the range read ahead meanwhile
    d.chain.mine(3)
    failures: list[int] = []

    def fail_once(low: int) -> None:
        if low == begin + 5 and not failures:
            failures.append(low)
            raise RuntimeError("the database went away")

    h.scanner.ledger = StoreHook(h.ledger, fail_once)
    first = h.scanner.step()
    assert (first.start, first.end) == (begin, begin + 4)
    with pytest.raises(RuntimeError, match="went away"):
        h.scanner.step()  # read begin+5..begin+9, started begin+10..begin+14, then the store failed
    state = h.state()
    assert state.cursor_height == begin + 4 and "went away" in (state.last_error or "")
    assert h.scanned_numbers() == list(range(begin, begin + 5)) and h.payments() == []
    results = h.scan()
    h.scanner.close()
    assert [(r.start, r.end) for r in results] == [(begin + 5, begin + 9), (begin + 10, begin + 14)]
    assert reads.begun == [(begin, begin + 4), *[(begin + 5, begin + 9), (begin + 10, begin + 14)] * 2]
    assert h.scanned_numbers() == list(range(begin, begin + 15))
    assert sorted(p.invoice_id for p in h.payments()) == sorted([eth.id, usdt.id])  # each once
    assert h.state().last_error is None


def test_a_step_reads_its_range_while_its_watch_index_is_built(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    h, reads, begin = pipeline(d, engine, db_url, tmp_path)
    eth, usdt = h.invoice("ETH", "1"), h.invoice("USDT", "1")
    d.chain.send_eth(eth.address, ETH)  # block begin: read before the index exists
    d.chain.token_transfer(d.usdt, usdt.address, USDT)  # block begin + 1
    d.chain.mine(2)
    build = h.scanner.watch.get

    def build_after_the_read_began() -> WatchIndex:
        wait_for("the step's range to be read", lambda: (begin, begin + 3) in reads.begun, timeout=30)
        return build()

    h.scanner.watch.get = build_after_the_read_began  # type: ignore[method-assign]
    [result] = h.scan()
    h.scanner.close()
    assert (result.start, result.end, result.matched) == (begin, begin + 3, 2)
    assert reads.begun == [(begin, begin + 3)]
    assert h.get(eth.id).status == h.get(usdt.id).status == "COMPLETED"


def test_a_failed_watch_index_build_fails_the_step_and_its_read_is_not_used(
    chain_snapshot: Deployed, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    d = chain_snapshot
    h, reads, begin = pipeline(d, engine, db_url, tmp_path)
    eth = h.invoice("ETH", "1")
    d.chain.send_eth(eth.address, ETH)  # block begin: its read asks the predicate, which must fail
    d.chain.mine(2)
    build = h.scanner.watch.get
    calls: list[int] = []

    def fail_the_first_build() -> WatchIndex:
        calls.append(1)
        if len(calls) == 1:
            wait_for("the step's range to be read", lambda: reads.begun, timeout=30)
            raise RuntimeError("the database went away")
        return build()

    h.scanner.watch.get = fail_the_first_build  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="went away"):
        h.scanner.step()
    assert "went away" in (h.state().last_error or "") and h.state().cursor_height is None
    [result] = h.scan()
    h.scanner.close()
    assert (result.start, result.end, result.matched) == (begin, begin + 2, 1)
    assert reads.begun == [(begin, begin + 2)] * 2  # the read of the failed step was not used
    assert h.get(eth.id).status == "COMPLETED"
