"""``paywatch status``: the operator's one screen, its JSON, ``--watch``, exit codes and escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from paywatch.cli import app as cli_app
from paywatch.config import AppConfig
from paywatch.health import network_lag
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.lease import Lease
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, ScannedBlock, UnmatchedTransfer
from paywatch.stores import create_store
from tests.conftest import TEST_NETWORKS


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    return {"PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks)}


def status(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli_app, ["status", *args], env=env)


def scanned(engine: Engine, network: str, *, tip: int, cursor: int, at: datetime, error: str | None = None) -> None:
    with session_scope(engine) as session:
        session.add(ScannedBlock(network=network, number=cursor, hash="0x1", parent_hash="0x0", timestamp=at))
        session.add(
            NetworkState(network=network, tip_height=tip, cursor_height=cursor, last_scan_at=at, last_error=error)
        )


def test_healthy_watcher_exits_0_with_every_section(engine: Engine, env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    scanned(engine, "ethereum", tip=100, cursor=100, at=now)
    result = status(env, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    eth, tron = report["networks"]
    assert (eth["network"], eth["status"], eth["tip"], eth["cursor"], eth["lag_blocks"], eth["lag_seconds"]) == (
        "ethereum",
        "ok",
        100,
        100,
        0,
        0.0,
    )
    assert eth["last_scan_at"].endswith("Z") and eth["last_error"] is None and eth["lease_holder"] == "-"
    assert tron["status"] == "unscanned" and tron["tip"] is None
    assert report["callbacks"] == {"pending": 0, "retrying": 0, "dead": 0, "oldest_pending_seconds": None}
    assert report["open_invoices"] == {"PARTIAL": 0, "PENDING": 0, "WAITING_FOR_CONFIRMATIONS": 0}
    assert report["unmatched_inbox"] == 0
    screen = status(env)
    elapsed = (datetime.now(UTC) - now).total_seconds()  # a loaded box may take seconds to get here
    assert screen.exit_code == 0
    for heading in ("ethereum", "lag s", "lease holder", "callback queue", "unmatched inbox", "PENDING"):
        assert heading in screen.stdout, heading
    ages = [int(age) for age in re.findall(r"\b(\d+)s ago\b", screen.stdout)]
    assert len(ages) == 1 and 0 <= ages[0] <= round(elapsed) + 1, (ages, elapsed)  # the scan stored at `now`


def test_lag_is_the_health_modules_lag(engine: Engine, env: dict[str, str], app_config: AppConfig) -> None:
    now = datetime.now(UTC)
    scanned(engine, "ethereum", tip=130, cursor=100, at=now - timedelta(seconds=90))
    report = json.loads(status(env, "--json").stdout)
    with session_scope(engine) as session:
        lag = network_lag(session, "ethereum", now)
    eth = report["networks"][0]
    assert eth["lag_blocks"] == lag.lag_blocks == 30
    assert lag.lag_seconds is not None and 90 <= eth["lag_seconds"] < lag.lag_seconds + 60


def test_a_failing_network_is_degraded_exit_1_and_shows_its_error(engine: Engine, env: dict[str, str]) -> None:
    scanned(engine, "tron", tip=5, cursor=5, at=datetime.now(UTC), error="RetryableChainError: no node answered")
    result = status(env)
    assert result.exit_code == 1
    assert "failing" in result.stdout and "tron: last error: RetryableChainError: no node answered" in result.stdout
    assert json.loads(status(env, "--json").stdout)["status"] == "degraded"


def test_a_stalled_network_is_degraded(engine: Engine, env: dict[str, str]) -> None:
    scanned(engine, "ethereum", tip=10, cursor=10, at=datetime.now(UTC) - timedelta(hours=1))
    result = status(env, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["networks"][0]["status"] == "stalled"


def test_queue_invoices_and_inbox_are_counted(engine: Engine, env: dict[str, str], app_config: AppConfig) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        store = create_store(session, "shop", now).store
        for _ in range(3):
            create_invoice(session, app_config, store, InvoiceRequest("ethereum", "USDT", "5"), now)
    with session_scope(engine) as session:
        invoice = session.exec(Invoice.__table__.select().limit(1)).first()  # type: ignore[attr-defined]
        assert invoice is not None
        session.get(Invoice, invoice.id).status = "PARTIAL"  # type: ignore[union-attr]
        events = list(session.exec(CallbackEvent.__table__.select()))  # type: ignore[attr-defined]
        assert len(events) == 3  # one invoice.created each
        first, second, third = (session.get(CallbackEvent, e.id) for e in events)
        assert first is not None and second is not None and third is not None
        first.created_at = now - timedelta(seconds=300)  # the oldest pending, never tried
        second.attempts, second.created_at = 2, now - timedelta(seconds=100)  # retrying
        third.state, third.attempts = "dead", 9
        for number, attached in ((1, None), (2, None), (3, "inv_x")):
            session.add(
                UnmatchedTransfer(
                    network="ethereum",
                    tx_hash=f"0x{number:064x}",
                    log_index=0,
                    from_address="0x" + "11" * 20,
                    to_address="0x" + "22" * 20,
                    asset_key="native",
                    amount=number,
                    block_number=number,
                    block_hash="0x" + "33" * 32,
                    block_time=now,
                    reason="no_match",
                    attached_invoice_id=attached,
                    created_at=now,
                )
            )
    report = json.loads(status(env, "--json").stdout)
    queue = report["callbacks"]
    assert (queue["pending"], queue["retrying"], queue["dead"]) == (1, 1, 1)
    assert 300 <= queue["oldest_pending_seconds"] < 400
    assert report["open_invoices"] == {"PARTIAL": 1, "PENDING": 2, "WAITING_FOR_CONFIRMATIONS": 0}
    assert report["unmatched_inbox"] == 2


def test_watch_refreshes_count_times(engine: Engine, env: dict[str, str]) -> None:
    scanned(engine, "ethereum", tip=7, cursor=7, at=datetime.now(UTC))
    result = status(env, "--json", "--watch", "--interval", "0", "--count", "3")
    assert result.exit_code == 0
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 3 and all(r["networks"][0]["cursor"] == 7 for r in reports)
    screens = status(env, "--watch", "--interval", "0", "--count", "2")
    assert screens.exit_code == 0 and screens.stdout.count("callback queue") == 2


def test_external_strings_are_never_rich_markup(engine: Engine, env: dict[str, str]) -> None:
    hostile = "node said [/] [bold red]FAKE OK[/bold red] [link=http://evil.example]x[/link]"
    scanned(engine, "ethereum", tip=3, cursor=3, at=datetime.now(UTC), error=hostile)
    result = status(env)
    assert result.exit_code == 1, result.output  # no markup crash: the degraded report was printed
    assert "[/]" in result.stdout and "[bold red]FAKE OK[/bold red]" in result.stdout
    assert "[link=http://evil.example]" in result.stdout


def test_unreachable_database_is_exit_2_on_stderr(tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {
        "PAYWATCH_DATABASE_URL": "postgresql+psycopg://u:pw-51cret@127.0.0.1:1/x",
        "PAYWATCH_NETWORKS": str(networks),
    }
    result = status(env, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: cannot read the database: OperationalError")
    assert "pw-51cret" not in result.stderr


def test_bad_configuration_is_exit_2_on_stderr(tmp_path: Path) -> None:
    env = {"PAYWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PAYWATCH_NETWORKS": str(tmp_path / "none.yaml")}
    result = status(env)
    assert result.exit_code == 2 and result.stdout == ""
    assert "cannot read the networks file" in result.stderr


def test_postgres_lease_holder_is_shown(engine: Engine, env: dict[str, str]) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory-lock leases exist on PostgreSQL only")
    lease = Lease(engine, "scan:ethereum")
    try:
        assert lease.acquire()
        assert lease._conn is not None
        pid = lease._conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        lease._conn.commit()
        networks = json.loads(status(env, "--json").stdout)["networks"]
        holder = {n["network"]: n["lease_holder"] for n in networks}
        assert holder["ethereum"].startswith(f"pid {pid} @ ") and holder["tron"] == "-"
    finally:
        lease.release()
    assert json.loads(status(env, "--json").stdout)["networks"][0]["lease_holder"] == "-"


def test_interrupting_a_watch_exits_with_the_last_reports_code(engine: Engine, env: dict[str, str]) -> None:
    from io import StringIO

    from rich.console import Console

    from paywatch.cli.status import run_status

    scanned(engine, "ethereum", tip=3, cursor=3, at=datetime.now(UTC), error="ChainError: down")

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    out = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        code = run_status(
            as_json=False, watch=True, interval=5, count=None, console=Console(file=out), sleep=interrupted
        )
    assert code == 1 and out.getvalue().count("callback queue") == 1


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:0", "127.0.0.1:99999", ":9108"])
def test_bad_metrics_bind_is_refused_naming_the_variable(tmp_path: Path, bind: str) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {
        "PAYWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "PAYWATCH_NETWORKS": str(networks),
        "PAYWATCH_METRICS_BIND": bind,
    }
    result = status(env)
    assert result.exit_code == 2 and "PAYWATCH_METRICS_BIND: expected host:port" in result.stderr
