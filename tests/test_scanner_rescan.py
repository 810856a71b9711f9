"""Admin rescans (range and single transaction) and their CLI, on anvil with the real database."""

from __future__ import annotations

import pytest
import typer
from sqlmodel import func, select
from typer.testing import CliRunner

from paywatch.cli.scan import register
from paywatch.rescan import RescanReport, rescan_range, rescan_transaction
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401

pytestmark = pytest.mark.anvil

USDT = 10**6


def _outbox(h: Harness) -> int:
    with session_scope(h.engine) as s:
        return int(s.exec(select(func.count(CallbackEvent.id))).one())  # type: ignore[arg-type]


def _history_payment(h: Harness, deployed: Deployed) -> tuple[str, str, int]:
    """An invoice paid in a block the live scanner will never read (it is below the cursor)."""
    inv = h.invoice("USDT", "9")
    tx = h.chain.token_transfer(deployed.usdt, inv.address, 9 * USDT)
    block = h.chain.height()
    h.chain.mine(3)
    with session_scope(h.engine) as s:  # pretend the scanner was started after the payment
        from paywatch.store.models import NetworkState

        state = s.get(NetworkState, h.network.name)
        assert state is not None
        state.cursor_height, state.cursor_hash = h.chain.height(), h.adapter.block_ref(h.chain.height()).hash
        s.add(state)
    h.scan()
    assert h.payments() == []
    return inv.id, tx, block


def test_rescan_range_dry_run_then_real_then_idempotent(h: Harness, deployed: Deployed) -> None:
    inv_id, tx, block = _history_payment(h, deployed)
    cursor = h.state().cursor_height
    outbox = _outbox(h)
    seen: list[tuple[int, int]] = []

    def rescan(dry_run: bool) -> RescanReport:
        return rescan_range(
            h.engine,
            h.network,
            h.adapter,
            h.ledger,
            start=block - 2,
            end=block + 1,
            dry_run=dry_run,
            clock=h.clock,
            progress=lambda done, total: seen.append((done, total)),
        )

    dry = rescan(True)
    assert [(p.invoice_id, p.tx_hash, p.change) for p in dry.payments] == [(inv_id, tx, "new")]
    [change] = dry.status_changes
    assert (change.before, change.after, change.paid_after) == ("PENDING", "COMPLETED", 9 * USDT)
    assert h.payments() == [] and h.get(inv_id).status == "PENDING" and _outbox(h) == outbox
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)

    real = rescan(False)
    assert [p.change for p in real.payments] == ["new"]
    assert h.get(inv_id).status == "COMPLETED" and len(h.payments()) == 1 and _outbox(h) > outbox
    assert h.state().cursor_height == cursor

    again = rescan(False)
    assert [p.change for p in again.payments] == ["unchanged"]
    assert again.status_changes == [] and not again.changed
    single = rescan_transaction(h.engine, h.network, h.adapter, h.ledger, tx, clock=h.clock)
    assert [p.change for p in single.payments] == ["unchanged"] and not single.changed
    assert len(h.payments()) == 1 and h.state().cursor_height == cursor


def test_cli_rescan_and_rescan_tx(h: Harness, deployed: Deployed) -> None:
    inv_id, tx, block = _history_payment(h, deployed)
    app = typer.Typer()
    register(app, lambda: h.config)
    runner = CliRunner()
    dry = runner.invoke(app, ["rescan", "anvil", "--from-block", str(block), "--to-block", str(block), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert inv_id in dry.output and "dry run: nothing was changed" in dry.output and "USDT 9" in dry.output
    assert h.payments() == []
    real = runner.invoke(app, ["rescan-tx", "anvil", tx])
    assert real.exit_code == 0, real.output
    assert "COMPLETED" in real.output and len(h.payments()) == 1
    bad = runner.invoke(app, ["rescan", "anvil", "--from-block", str(block), "--to-block", str(10**9)])
    # the CLI convention: errors on stderr, exit code 2, nothing on stdout
    assert bad.exit_code == 2, bad.output
    assert "error: " in bad.stderr and "beyond the node's tip" in bad.stderr
    assert "beyond the node's tip" not in bad.stdout
    bad_tx = runner.invoke(app, ["rescan-tx", "anvil", "0x" + "ab" * 32])
    assert bad_tx.exit_code == 2 and "error: " in bad_tx.stderr, bad_tx.output
