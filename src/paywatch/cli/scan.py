"""``paywatch rescan`` and ``paywatch rescan-tx``: thin Typer commands over :mod:`paywatch.rescan`.

Mount them with ``register(app, get_config)``; the commands load nothing themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from paywatch.chains.base import ChainAdapter
from paywatch.chains.registry import make_adapter
from paywatch.cli.support import fail, now
from paywatch.config import AppConfig, NetworkConfig
from paywatch.domain.amounts import format_amount
from paywatch.domain.transfer import NATIVE
from paywatch.errors import PaywatchError
from paywatch.ledger import Ledger
from paywatch.rescan import RescanReport, rescan_range, rescan_transaction
from paywatch.runtime import open_database


def _network(config: AppConfig, name: str) -> NetworkConfig:
    network = config.networks.get(name)
    if network is None:
        raise typer.BadParameter(f"unknown network {name!r}; configured: {', '.join(sorted(config.networks))}")
    return network


def _asset_units(network: NetworkConfig, asset_key: str, amount: int) -> str:
    for symbol, asset in network.assets.items():
        if (asset.native and asset_key == NATIVE) or (asset.contract and asset.contract.lower() == asset_key):
            return f"{format_amount(amount, asset.decimals)} {symbol}"
    return f"{amount} ({asset_key})"


def print_report(console: Console, network: NetworkConfig, report: RescanReport) -> None:
    """The payments, inbox entries and status changes of a rescan as tables."""
    head = "would record" if report.dry_run else "recorded"
    console.print(
        f"{report.network}: blocks {report.start}..{report.end} ({report.blocks} read), "
        f"{report.transfers} transfer(s) to watched addresses"
    )
    if report.payments:
        table = Table(title=f"Payments ({head})")
        for column in ("change", "invoice", "tx", "log", "amount", "block"):
            table.add_column(column)
        for p in report.payments:
            amount = _asset_units(network, p.asset_key, p.amount)
            table.add_row(p.change, p.invoice_id, p.tx_hash, str(p.log_index), amount, str(p.block_number))
        console.print(table)
    if report.unmatched:
        table = Table(title=f"Unmatched inbox ({head})")
        for column in ("change", "tx", "log", "to", "amount", "reason"):
            table.add_column(column)
        for u in report.unmatched:
            amount = _asset_units(network, u.asset_key, u.amount)
            table.add_row(u.change, u.tx_hash, str(u.log_index), u.to_address, amount, u.reason)
        console.print(table)
    if report.status_changes:
        table = Table(title="Status changes" + (" (dry run)" if report.dry_run else ""))
        for column in ("invoice", "before", "after", "flags", "paid"):
            table.add_column(column)
        for c in report.status_changes:
            flags = ",".join(c.flags_after) or "-"
            table.add_row(c.invoice_id, c.before, c.after, flags, f"{c.paid_before} -> {c.paid_after}")
        console.print(table)
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
) -> RescanReport:
    """``paywatch rescan``: progress bar, then the report."""
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
    print_report(console, network, report)
    return report


def run_rescan_tx(
    config: AppConfig,
    network_name: str,
    tx_hash: str,
    *,
    dry_run: bool,
    console: Console,
    adapter: ChainAdapter | None = None,
) -> RescanReport:
    """``paywatch rescan-tx``: one transaction, then the report."""
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
    print_report(console, network, report)
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
        to_block: int | None = typer.Option(None, "--to-block", min=0, help="last block (default: the tip)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print what would change; change nothing"),
    ) -> None:
        """Rescan a block range with the live scanner's code path (the cursor does not move)."""
        console = Console()
        try:
            run_rescan(
                get_config(), network, from_block=from_block, to_block=to_block, dry_run=dry_run, console=console
            )
        except PaywatchError as exc:
            raise fail(str(exc)) from None

    @app.command("rescan-tx")
    def rescan_tx(
        network: str = typer.Argument(..., help="network name from networks.yaml"),
        tx_hash: str = typer.Argument(..., metavar="TXHASH", help="transaction hash"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print what would change; change nothing"),
    ) -> None:
        """Record the transfers of one transaction, as the live scanner would."""
        console = Console()
        try:
            run_rescan_tx(get_config(), network, tx_hash, dry_run=dry_run, console=console)
        except PaywatchError as exc:
            raise fail(str(exc)) from None
