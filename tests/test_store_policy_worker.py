"""A policy change reaches a running ``paywatch worker`` process without a restart (issue 9.11):
the policy is changed by another process (``paywatch store update``, run by the test's process) while the
worker process scans."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import Settings, load_config
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import session_scope
from paywatch.store.models import Invoice, NetworkState, Payment, UnmatchedTransfer
from paywatch.stores import create_store
from tests.support.cli import paywatch
from tests.support.worker_procs import (
    USDT,
    Devnet,
    PaywatchProcess,
    network_entry,
    paywatch_env,
    wait_for,
    write_networks,
)

pytestmark = pytest.mark.anvil


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    net = Devnet.start()
    yield net
    net.close()


@pytest.mark.slow
def test_policy_changes_reach_the_running_worker(devnet: Devnet, db_url: str, engine: Engine, tmp_path: Path) -> None:
    chain = devnet.chain
    entry = {**network_entry([devnet.node.url], devnet.usdt, poll=0.1), "start_block": chain.height() + 1}
    networks = write_networks(tmp_path / "networks.yaml", {"devnet": entry})
    config = load_config(Settings(database_url=db_url, networks=networks))
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        store = create_store(s, "shop", now).store
        first, second = (
            create_invoice(s, config, store, InvoiceRequest("devnet", "USDT", "5", expires_in=60), now)
            for _ in range(2)
        )
        store_id, targets = store.id, [(i.id, i.address, i.expires_at) for i in (first, second)]
    env = paywatch_env(db_url, networks)

    def cursor() -> int | None:
        with session_scope(engine) as s:
            state = s.get(NetworkState, "devnet")
            return None if state is None else state.cursor_height

    def update(*args: str) -> None:
        # the CLI in the test's process: another process than the worker's (tests/support/cli.py)
        done = paywatch(["store", "update", store_id, *args], env)
        assert done.returncode == 0, done.stderr

    worker = PaywatchProcess(["worker"], env, tmp_path / "worker.log")
    try:
        chain.mine(1)
        tip = chain.height()
        wait_for("the worker to scan the tip", lambda: (cursor() or -1) >= tip, timeout=60)

        update("--late-window", "0")  # another process; the worker keeps running
        (first_id, first_address, expires_at) = targets[0]
        chain.next_timestamp(expires_at + timedelta(seconds=30))
        chain.wait(chain.token_transfer(devnet.usdt, first_address, 5 * USDT))

        def inbox() -> list[UnmatchedTransfer]:
            with session_scope(engine) as s:
                return list(s.exec(select(UnmatchedTransfer)))

        [row] = wait_for("the late transfer in the inbox", inbox, timeout=60)
        assert (row.reason, row.hint_invoice_id) == ("expired_beyond_late_window", first_id)

        update("--late-window", "1h", "--accept-late")
        (second_id, second_address, _) = targets[1]
        chain.wait(chain.token_transfer(devnet.usdt, second_address, 5 * USDT))
        chain.mine(2)

        def completed() -> Invoice | None:
            with session_scope(engine) as s:
                invoice = s.get(Invoice, second_id)
                return invoice if invoice is not None and invoice.status == "COMPLETED" else None

        done = wait_for("the late payment to count", completed, timeout=60)
        assert (done.amount_paid, done.flags) == (5 * USDT, ["paid_late"])
    finally:
        worker.close()
    with session_scope(engine) as s:
        assert [p.invoice_id for p in s.exec(select(Payment))] == [second_id]
