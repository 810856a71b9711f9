"""The ``paywatch`` command line: thin commands over the services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paywatch.cli.callbacks import callbacks_app, rotate_secret
from paywatch.cli.scan import register as register_scan_commands
from paywatch.cli.support import get_config, guarded, now, open_app
from paywatch.cli.tables import Column, decimal_amount, money, print_table, short_hash, short_time
from paywatch.config import AppConfig, load_config
from paywatch.invoices import cancel_invoice, get_invoice, list_invoices, mark_paid
from paywatch.ledger import Ledger
from paywatch.outbox import load_view
from paywatch.runtime import open_database
from paywatch.store.db import session_scope, upgrade
from paywatch.stores import create_store

app = typer.Typer(help="paywatch: self-hosted crypto payment watcher.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
store_app = typer.Typer(help="Stores (merchants).", no_args_is_help=True)
invoice_app = typer.Typer(help="Invoices.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(store_app, name="store")
app.add_typer(invoice_app, name="invoice")
register_scan_commands(app, load_config)
app.add_typer(callbacks_app, name="callbacks")
store_app.command("rotate-secret")(rotate_secret)

console = Console()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all Alembic migrations to PAYWATCH_DATABASE_URL."""
    config = get_config()
    guarded(lambda: upgrade(config.settings.database_url))
    console.print("database is up to date")


@store_app.command("create")
def store_create(
    name: str,
    callback_url: Annotated[str | None, typer.Option(help="Default callback URL for the store's invoices")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Create a store; prints its id, API key and webhook secret ONCE."""
    config, engine = open_app()

    def create() -> Any:
        from paywatch.netguard import validate_callback_url

        if callback_url is not None:
            validate_callback_url(callback_url, allow_private=config.settings.allow_private_callbacks)
        with session_scope(engine) as session:
            return create_store(session, name, now(), callback_url=callback_url)

    created = guarded(create)
    out = {"store_id": created.store.id, "api_key": created.api_key, "webhook_secret": created.store.webhook_secret}
    if as_json:
        typer.echo(json.dumps(out))
        return
    table = Table(title=f"store {name!r} created: keep these, they are not shown again")
    table.add_column("field")
    table.add_column("value")
    for key, value in out.items():
        table.add_row(key, value)
    console.print(table)


@app.command("api")
def api(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Serve the merchant API."""
    import uvicorn

    from paywatch.api.app import create_app

    config, engine = open_app()
    uvicorn.run(create_app(config, engine=engine), host=host, port=port, log_level="info")


@invoice_app.command("list")
def invoice_list(
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    store: Annotated[str | None, typer.Option(help="Only this store id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, addresses in full")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, the same body as the API")] = False,
) -> None:
    """List invoices, newest first."""
    config, engine = open_app()

    def read() -> list[dict[str, Any]]:
        with session_scope(engine) as session:
            rows, _ = list_invoices(session, store, status=status, limit=limit, cursor=None)
            return [
                load_view(session, row, config.networks[row.network]) for row in rows if row.network in config.networks
            ]

    views = guarded(read)
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    rows = [
        {
            **view,
            "due": f"{view['asset']} {view['amount']}",
            "paid": f"{view['asset']} {view['amount_paid']}",
            "flags": ",".join(view["flags"]),
        }
        for view in views
    ]
    columns = [
        Column("id", "id", no_wrap=True),
        Column("status", "status"),
        Column("network", "network"),
        Column("amount", "due", justify="right", no_wrap=True),
        Column("paid", "paid", justify="right", no_wrap=True),
        Column("flags", "flags", compact=False),
        Column("address", "address", compact=False),
        Column("memo", "memo", compact=False),
        Column("order", "order_id", compact=False),
        Column("expires", "expires_at"),
        Column("created", "created_at", compact=False),
    ]
    compact = {"expires_at": short_time}
    print_table(console, f"{len(views)} invoices", columns, rows, wide=wide, compact=compact)


@invoice_app.command("show")
def invoice_show(invoice_id: str) -> None:
    """Show one invoice as JSON (the same body as the API)."""
    config, engine = open_app()

    def read() -> dict[str, Any]:
        with session_scope(engine) as session:
            invoice = get_invoice(session, None, invoice_id)
            return load_view(session, invoice, config.networks[invoice.network])

    typer.echo(json.dumps(guarded(read), indent=2))


def _admin_change(invoice_id: str, action: Any) -> None:
    config, engine = open_app()
    ledger = Ledger(config.networks)

    def change() -> str:
        with session_scope(engine) as session:
            invoice = get_invoice(session, None, invoice_id)
            action(session, ledger, invoice, now(), actor="cli")
            return invoice.status

    status = guarded(change)
    console.print(f"{invoice_id}: {status}")


@invoice_app.command("cancel")
def invoice_cancel(invoice_id: str) -> None:
    """Cancel an unpaid invoice (sends invoice.cancelled)."""
    _admin_change(invoice_id, cancel_invoice)


@invoice_app.command("mark-paid")
def invoice_mark_paid(invoice_id: str) -> None:
    """Mark an invoice paid by hand (COMPLETED with the marked_paid flag)."""
    _admin_change(invoice_id, mark_paid)


unmatched_app = typer.Typer(help="Transfers to watched addresses that matched no invoice.", no_args_is_help=True)
app.add_typer(unmatched_app, name="unmatched")


@unmatched_app.command("list")
def unmatched_list(
    network: Annotated[str | None, typer.Option(help="Only this network")] = None,
    include_attached: Annotated[bool, typer.Option("--all", help="Include already attached transfers")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, hashes and addresses in full")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: base units (amount_units) and decimal amount")] = False,
) -> None:
    """List the unmatched inbox, newest first: asset, amount in asset units, short tx hash, reason."""
    from paywatch.unmatched import list_unmatched
    from paywatch.views import iso

    config, engine = open_app()
    rows = []
    with session_scope(engine) as session:
        for r in list_unmatched(session, network=network, include_attached=include_attached):
            symbol, amount = decimal_amount(config.networks.get(r.network), r.asset_key, r.amount)
            rows.append(
                {
                    "id": r.id,
                    "network": r.network,
                    "tx_hash": r.tx_hash,
                    "log_index": r.log_index,
                    "to_address": r.to_address,
                    "asset": symbol,
                    "amount": amount,
                    "asset_key": r.asset_key,
                    "amount_units": str(r.amount),
                    "memo": r.memo,
                    "block_number": r.block_number,
                    "block_time": iso(r.block_time),
                    "reason": r.reason,
                    "hint_invoice_id": r.hint_invoice_id,
                    "orphaned": r.orphaned,
                    "attached_invoice_id": r.attached_invoice_id,
                    "value": money(config.networks.get(r.network), r.asset_key, r.amount),
                }
            )
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in row.items() if k != "value"} for row in rows], indent=2))
        return
    columns = [
        Column("id", "id", justify="right"),
        Column("network", "network"),
        Column("tx", "tx_hash", no_wrap=True),
        Column("log", "log_index", compact=False),
        Column("amount", "value", justify="right", no_wrap=True),
        Column("base units", "amount_units", compact=False, justify="right"),
        Column("asset key", "asset_key", compact=False),
        Column("to", "to_address", compact=False),
        Column("memo", "memo", compact=False),
        Column("block", "block_number", compact=False, justify="right"),
        Column("block time", "block_time", compact=False),
        Column("reason", "reason"),
        Column("hint", "hint_invoice_id", compact=False),
        Column("attached to", "attached_invoice_id", compact=False),
    ]
    title = f"{len(rows)} unmatched transfers"
    compact = {"tx_hash": short_hash, "reason": lambda r: str(r).replace("_", " ")}  # words wrap; codes in --wide
    print_table(console, title, columns, rows, wide=wide, compact=compact)


@unmatched_app.command("attach")
def unmatched_attach(transfer_id: int, invoice_id: str) -> None:
    """Credit an unmatched transfer to an invoice (audited; re-evaluates and fires callbacks)."""
    from paywatch.unmatched import attach

    config, engine = open_app()
    ledger = Ledger(config.networks)

    def change() -> str:
        with session_scope(engine) as session:
            attach(session, ledger, transfer_id, invoice_id, now(), actor="cli")
            return get_invoice(session, None, invoice_id).status

    status = guarded(change)
    console.print(f"transfer {transfer_id} attached to {invoice_id}: {status}")


def _configure_logging(config: AppConfig) -> None:
    from paywatch.logs import configure

    configure(json_lines=config.settings.log_json)


@app.command("worker")
def worker() -> None:
    """Run the scanners, the expiry sweep and callback delivery until SIGTERM."""
    import asyncio

    from paywatch.worker import Worker

    config = get_config()
    _configure_logging(config)
    engine = guarded(lambda: open_database(config))
    guarded(lambda: asyncio.run(Worker(config, engine).run()))


@app.command("run")
def run(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Run the API and the worker in one process."""
    import asyncio

    config = get_config()
    _configure_logging(config)
    engine = guarded(lambda: open_database(config))
    guarded(lambda: asyncio.run(serve_all(config, engine, host, port)))


async def serve_all(config: AppConfig, engine: Any, host: str, port: int) -> None:
    """The API (uvicorn) and the worker on one event loop. SIGTERM/SIGINT stop both gracefully: the
    running scan step commits, then the process exits 0 (uvicorn's own signal capture is replaced,
    since it re-raises the signal after serving, which would kill the worker mid-step)."""
    import asyncio
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    from paywatch.api.app import create_app
    from paywatch.worker import Worker

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    worker = Worker(config, engine)
    server = Server(uvicorn.Config(create_app(config, engine=engine), host=host, port=port, log_config=None))

    def stop() -> None:
        server.should_exit = True
        worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    worker_task = asyncio.create_task(worker.run(install_signals=False))
    try:
        await server.serve()
    finally:
        worker.stop()
        await worker_task


@app.command("demo")
def demo(
    anvil: Annotated[Path | None, typer.Option(help="Path of the anvil binary (default: node_modules)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Where to keep the demo database (default: a temp dir)")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds")] = 60.0,
) -> None:
    """Run the one-minute devnet demo: anvil, test USDT, API, worker, verified callbacks."""
    from paywatch.demo import run_demo

    ok = guarded(lambda: run_demo(anvil=anvil, workdir=workdir, timeout=timeout, console=console))
    raise typer.Exit(0 if ok else 1)
