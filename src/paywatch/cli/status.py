"""``paywatch status``: one screen for the operator, or JSON for a monitoring check.

Exit codes: 0 healthy, 1 degraded (a network stalled or failing), 2 error (configuration or
database unreadable; the message goes to stderr). ``--watch`` refreshes every ``--interval``
seconds, ``--count`` times (forever by default); the exit code is the last report's.

Every string that comes from outside (network names, error texts, lease holders) is shown as
plain text, never as Rich markup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from paywatch.cli.support import fail, get_config, guarded, now
from paywatch.errors import PaywatchError, UnavailableError
from paywatch.redact import scrub

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from paywatch.config import AppConfig
    from paywatch.status import StatusReport

EXIT_CODES = {"ok": 0, "degraded": 1, "error": 2}


def _database_error(exc: BaseException) -> str:
    first_line = (str(exc).splitlines() or [""])[0]
    return f"cannot read the database: {type(exc).__name__}: {scrub(first_line)[:300]}"


def _open(config: AppConfig) -> Engine:
    """The engine on an up-to-date schema; an unreachable database is a PaywatchError here."""
    from paywatch.runtime import open_database

    try:
        return open_database(config)
    except PaywatchError:
        raise
    except Exception as exc:
        message = _database_error(exc)
    raise UnavailableError(message)


def _cell(value: object) -> Text:
    return Text("-" if value is None else str(value))


def render(report: StatusReport) -> Group:
    """The report as Rich renderables (tables of plain Text cells)."""
    networks = Table(
        title=Text(f"paywatch {report.status} at {report.at}"), box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1)
    )
    for column in ("network", "state", "tip", "cursor", "lag", "lag s", "scanned", "lease holder"):
        networks.add_column(column, no_wrap=column != "lease holder", overflow="fold")
    errors: list[Text] = []
    for n in report.networks:
        scanned = None if n.seconds_since_scan is None else f"{n.seconds_since_scan:.0f}s ago"
        # lag: blocks behind the tip; lag s: age of the newest scanned block while blocks wait
        row = (n.network, n.status, n.tip, n.cursor, n.lag_blocks, n.lag_seconds, scanned, n.lease_holder)
        networks.add_row(*(_cell(v) for v in row))
        if n.last_error:
            errors.append(Text(f"{n.network}: last error: {n.last_error}"))
    queue = Table(title=Text("callback queue"), box=box.SIMPLE_HEAD)
    for column in ("pending", "retrying", "dead", "oldest pending (s)"):
        queue.add_column(column)
    q = report.callbacks
    queue.add_row(*(_cell(v) for v in (q.pending, q.retrying, q.dead, q.oldest_pending_seconds)))
    work = Table(title=Text("open invoices and inbox"), box=box.SIMPLE_HEAD)
    for status in report.open_invoices:
        work.add_column(status)
    work.add_column("unmatched inbox")
    work.add_row(*(_cell(v) for v in report.open_invoices.values()), _cell(report.unmatched_inbox))
    return Group(networks, *errors, queue, work)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted (or --count times)")] = False,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between refreshes with --watch")] = 2.0,
    count: Annotated[int | None, typer.Option(min=1, help="With --watch: stop after this many reports")] = None,
) -> None:
    """Scan state per network, the callback queue, open invoices and the inbox (exit 0/1/2)."""
    code = run_status(as_json=as_json, watch=watch, interval=interval, count=count, console=Console())
    raise typer.Exit(code)


def run_status(
    *,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
    console: Console,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = now,
) -> int:
    """Print one report (or ``count`` of them with ``watch``); the exit code of the last one."""
    from paywatch.status import collect
    from paywatch.store.db import session_scope

    config = get_config()
    engine = guarded(lambda: _open(config))
    rounds = 0
    try:
        while True:
            try:
                with session_scope(engine) as session:
                    report = collect(session, config, clock())
            except Exception as exc:  # the database is down or unreadable: a monitoring "error"
                raise fail(_database_error(exc)) from None
            if as_json:
                typer.echo(json.dumps(report.to_json()))
            else:
                if watch and console.is_terminal:
                    console.clear()
                console.print(render(report))
            rounds += 1
            if not watch or (count is not None and rounds >= count):
                return EXIT_CODES.get(report.status, 2)
            try:
                sleep(interval)
            except KeyboardInterrupt:  # Ctrl-C ends a watch quietly, with the last report's code
                return EXIT_CODES.get(report.status, 2)
    finally:
        engine.dispose()
