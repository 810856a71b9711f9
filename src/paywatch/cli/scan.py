"""``paywatch rescan`` and ``paywatch rescan-tx``: thin Typer commands over :mod:`paywatch.rescan`.

Mount them with ``register(app, get_config)``; the commands load nothing themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from paywatch.cli.support import fail, now, plain
from paywatch.cli.tables import Column, money, print_table, short_hash
from paywatch.errors import PaywatchError

if TYPE_CHECKING:
    from paywatch.chains.base import ChainAdapter
    from paywatch.config import AppConfig, NetworkConfig
    from paywatch.rescan import RescanReport, StatusChange


def _network(config: AppConfig, name: str) -> NetworkConfig:
    network = config.networks.get(name)
    if network is None:
        raise typer.BadParameter(f"unknown network {name!r}; configured: {', '.join(sorted(config.networks))}")
    return network


def print_report(console: Console, network: NetworkConfig, report: RescanReport, *, wide: bool = False) -> None:
    """The payments, inbox entries and status changes of a rescan as tables (see cli.tables)."""
    head = "would record" if report.dry_run else "recorded"
    console.print(
        f"{plain(report.network)}: blocks {report.start}..{report.end} ({report.blocks} read), "
        f"{report.transfers} transfer(s) to watched addresses"
    )
    short = {"tx_hash": short_hash, "to_address": short_hash}
    if report.payments:
        rows = [{**vars(p), "value": money(network, p.asset_key, p.amount)} for p in report.payments]
        columns = [
            Column("change", "change"),
            Column("invoice", "invoice_id", no_wrap=True),
            Column("tx", "tx_hash", no_wrap=True),
            Column("log", "log_index", compact=False, justify="right"),
            Column("amount", "value", justify="right", no_wrap=True),
            Column("block", "block_number", justify="right"),
        ]
        print_table(console, f"Payments ({head})", columns, rows, wide=wide, compact=short)
    if report.unmatched:
        rows = [{**vars(u), "value": money(network, u.asset_key, u.amount)} for u in report.unmatched]
        columns = [
            Column("change", "change"),
            Column("tx", "tx_hash", no_wrap=True),
            Column("log", "log_index", compact=False, justify="right"),
            Column("to", "to_address", no_wrap=True),
            Column("amount", "value", justify="right", no_wrap=True),
            Column("reason", "reason"),
        ]
        print_table(console, f"Unmatched inbox ({head})", columns, rows, wide=wide, compact=short)
    if report.status_changes:
        assets = {p.invoice_id: p.asset_key for p in report.payments}

        def paid(c: StatusChange) -> str:
            if c.invoice_id not in assets:
                return f"{c.paid_before} -> {c.paid_after} base units"
            key = assets[c.invoice_id]
            return f"{money(network, key, c.paid_before)} -> {money(network, key, c.paid_after)}"

        rows = [{**vars(c), "flags": ",".join(c.flags_after) or "-", "paid": paid(c)} for c in report.status_changes]
        columns = [
            Column("invoice", "invoice_id", no_wrap=True),
            Column("before", "before"),
            Column("after", "after"),
            Column("flags", "flags"),
            Column("paid", "paid"),
        ]
        print_table(console, "Status changes" + (" (dry run)" if report.dry_run else ""), columns, rows, wide=wide)
    if report.dry_run:
        console.print("dry run: nothing was changed")
    elif not report.changed:
        console.print("nothing to change: everything was already recorded")


def run_rescan(
    config: AppConfig,
    network_name: str,
    *,
    from_block: int,
    to_block: int | None,
    dry_run: bool,
    console: Console,
    adapter: ChainAdapter | None = None,
    wide: bool = False,
) -> RescanReport:
    """``paywatch rescan``: progress bar, then the report."""
    from paywatch.chains.registry import make_adapter
    from paywatch.ledger import Ledger
    from paywatch.rescan import rescan_range
    from paywatch.runtime import open_database

    network = _network(config, network_name)
    engine = open_database(config)
    try:
        with _progress(console) as bar:
            task = bar.add_task(f"rescan {network.name}", total=None)
            report = rescan_range(
                engine,
                network,
                adapter or make_adapter(network),
                Ledger(config.networks),
                start=from_block,
                end=to_block,
                dry_run=dry_run,
                clock=now,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        engine.dispose()
    print_report(console, network, report, wide=wide)
    return report


def run_rescan_tx(
    config: AppConfig,
    network_name: str,
    tx_hash: str,
    *,
    dry_run: bool,
    console: Console,
    adapter: ChainAdapter | None = None,
    wide: bool = False,
) -> RescanReport:
    """``paywatch rescan-tx``: one transaction, then the report."""
    from paywatch.chains.registry import make_adapter
    from paywatch.ledger import Ledger
    from paywatch.rescan import rescan_transaction
    from paywatch.runtime import open_database

    network = _network(config, network_name)
    engine = open_database(config)
    try:
        with _progress(console) as bar:
            task = bar.add_task(f"rescan {tx_hash[:18]}", total=1)
            report = rescan_transaction(
                engine,
                network,
                adapter or make_adapter(network),
                Ledger(config.networks),
                tx_hash,
                dry_run=dry_run,
                clock=now,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        engine.dispose()
    print_report(console, network, report, wide=wide)
    return report


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def register(app: typer.Typer, get_config: Callable[[], AppConfig]) -> None:
    """Add ``rescan`` and ``rescan-tx`` to ``app``; ``get_config`` loads the configuration."""

    @app.command("rescan")
    def rescan(
        network: str = typer.Argument(..., help="network name from networks.yaml"),
        from_block: int = typer.Option(..., "--from-block", min=0, help="first block to rescan"),
        to_block: int | None = typer.Option(None, "--to-block", min=0, help="last block (default: the scan cursor)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print what would change; change nothing"),
        wide: bool = typer.Option(False, "--wide", help="every column, hashes in full"),
    ) -> None:
        """Rescan a block range with the live scanner's code path (the cursor does not move)."""
        console = Console()
        try:
            config = get_config()
            run_rescan(
                config, network, from_block=from_block, to_block=to_block, dry_run=dry_run, console=console, wide=wide
            )
        except PaywatchError as exc:
            raise fail(str(exc)) from None

    @app.command("rescan-tx")
    def rescan_tx(
        network: str = typer.Argument(..., help="network name from networks.yaml"),
        tx_hash: str = typer.Argument(..., metavar="TXHASH", help="transaction hash"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print what would change; change nothing"),
        wide: bool = typer.Option(False, "--wide", help="every column, hashes in full"),
    ) -> None:
        """Record the transfers of one transaction, as the live scanner would."""
        console = Console()
        try:
            run_rescan_tx(get_config(), network, tx_hash, dry_run=dry_run, console=console, wide=wide)
        except PaywatchError as exc:
            raise fail(str(exc)) from None
