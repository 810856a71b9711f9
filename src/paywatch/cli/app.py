"""The ``paywatch`` command line: thin commands over the services.

Each command imports the services it uses in its body (see :mod:`paywatch.cli.support`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paywatch.cli.callbacks import callbacks_app, rotate_secret
from paywatch.cli.scan import register as register_scan_commands
from paywatch.cli.status import status as status_command
from paywatch.cli.support import fail, get_config, guarded, load_app_config, now, open_app, plain
from paywatch.cli.tables import Column, decimal_amount, money, print_table, short_hash, short_time

if TYPE_CHECKING:
    from paywatch.config import AppConfig
    from paywatch.lease import SingleWorkerLock

app = typer.Typer(help="paywatch: self-hosted crypto payment watcher.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
store_app = typer.Typer(help="Stores (merchants).", no_args_is_help=True)
invoice_app = typer.Typer(help="Invoices.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(store_app, name="store")
app.add_typer(invoice_app, name="invoice")
register_scan_commands(app, load_app_config)
app.add_typer(callbacks_app, name="callbacks")
store_app.command("rotate-secret")(rotate_secret)
app.command("status")(status_command)

console = Console()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all Alembic migrations to PAYWATCH_DATABASE_URL."""
    from paywatch.runtime import seal_secrets
    from paywatch.store.db import make_engine, upgrade

    config = get_config()
    guarded(lambda: upgrade(config.settings.database_url))
    engine = make_engine(config.settings.database_url)
    try:
        sealed = guarded(lambda: seal_secrets(config, engine))
    finally:
        engine.dispose()
    console.print("database is up to date" + (f"; {sealed} secret(s) encrypted" if sealed else ""))


@db_app.command("encrypt-secrets")
def db_encrypt_secrets() -> None:
    """Encrypt stored webhook secrets with PAYWATCH_SECRET_KEY (re-encrypt under its first key)."""
    from paywatch.runtime import seal_secrets

    config, engine = open_app()
    if not config.settings.secret_box().enabled:
        raise fail("PAYWATCH_SECRET_KEY is not set: there is no key to encrypt with")
    console.print(f"{guarded(lambda: seal_secrets(config, engine))} secret(s) encrypted")


@db_app.command("new-secret-key")
def db_new_secret_key() -> None:
    """Print a fresh Fernet key for PAYWATCH_SECRET_KEY."""
    from paywatch.secretbox import new_key

    typer.echo(new_key())


@store_app.command("create")
def store_create(
    name: str,
    callback_url: Annotated[str | None, typer.Option(help="Default callback URL for the store's invoices")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Create a store; prints its id, API key and webhook secret ONCE."""
    from paywatch.store.db import session_scope
    from paywatch.stores import create_store

    config, engine = open_app()

    def create() -> Any:
        from paywatch.netguard import validate_callback_url

        if callback_url is not None:
            validate_callback_url(
                callback_url,
                allow_private=config.settings.allow_private_callbacks,
                ports=config.settings.callback_ports,
            )
        with session_scope(engine) as session:
            return create_store(session, name, now(), callback_url=callback_url, box=config.settings.secret_box())

    created = guarded(create)
    out = {"store_id": created.store.id, "api_key": created.api_key, "webhook_secret": created.webhook_secret}
    if as_json:
        typer.echo(json.dumps(out))
        return
    table = Table(title=f"store {plain(repr(name))} created: keep these, they are not shown again")
    table.add_column("field")
    table.add_column("value")
    for key, value in out.items():
        table.add_row(plain(key), plain(value))
    console.print(table)


@store_app.command("update")
def store_update(
    store: Annotated[str, typer.Argument(help="Store id")],
    underpaid_tolerance: Annotated[
        str | None, typer.Option(help='Shortfall that still settles an invoice: "0.5%" or the fraction "0.005"')
    ] = None,
    late_window: Annotated[
        str | None, typer.Option(help='How long after expiry payments still match: "24h", "30m", "7d" or seconds')
    ] = None,
    accept_late: Annotated[
        bool | None, typer.Option("--accept-late/--no-accept-late", help="Whether late payments count")
    ] = None,
    callback_url: Annotated[str | None, typer.Option(help="The store's callback URL")] = None,
    no_callback_url: Annotated[bool, typer.Option("--no-callback-url", help="Remove the callback URL")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Change a store's payment policy (applies to the running scanners without a restart)."""
    from paywatch.store.db import session_scope
    from paywatch.stores import get_store, store_view, update_store

    config, engine = open_app()
    given: dict[str, Any] = {}
    if underpaid_tolerance is not None:
        given["underpaid_tolerance"] = underpaid_tolerance
    if late_window is not None:
        given["late_window"] = late_window
    if accept_late is not None:
        given["accept_late_payments"] = accept_late
    if callback_url is not None and no_callback_url:
        raise fail("give either --callback-url or --no-callback-url, not both")
    if callback_url is not None or no_callback_url:
        given["callback_url"] = None if no_callback_url else callback_url

    def change() -> dict[str, Any]:
        with session_scope(engine) as session:
            row = get_store(session, store)
            update_store(
                session,
                row,
                now(),
                actor="cli",
                allow_private_callbacks=config.settings.allow_private_callbacks,
                callback_ports=config.settings.callback_ports,
                **given,
            )
            return store_view(row)

    view = guarded(change)
    if as_json:
        typer.echo(json.dumps(view))
        return
    table = Table(title=f"store {plain(view['id'])}")
    table.add_column("setting")
    table.add_column("value")
    for key, value in view.items():
        table.add_row(key, plain(str(value)))
    console.print(table)


@app.command("api")
def api(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Serve the merchant API."""
    import asyncio

    import uvicorn

    from paywatch.api.app import create_app
    from paywatch.api.metrics_server import alongside, metrics_server

    config, engine = open_app()
    settings = uvicorn.Config(create_app(config, engine=engine), host=host, port=port, log_level="info")
    # the event loop uvicorn's own run() would pick: uvloop (installed with paywatch), else asyncio's
    with asyncio.Runner(loop_factory=settings.get_loop_factory()) as runner:
        runner.run(alongside(metrics_server(config, engine), uvicorn.Server(settings).serve()))


@invoice_app.command("list")
def invoice_list(
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    store: Annotated[str | None, typer.Option(help="Only this store id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, addresses in full")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, the same body as the API")] = False,
) -> None:
    """List invoices, newest first."""
    from paywatch.invoices import list_invoices
    from paywatch.outbox import load_view
    from paywatch.store.db import session_scope

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
    from paywatch.invoices import get_invoice
    from paywatch.outbox import load_view
    from paywatch.store.db import session_scope

    config, engine = open_app()

    def read() -> dict[str, Any]:
        with session_scope(engine) as session:
            invoice = get_invoice(session, None, invoice_id)
            return load_view(session, invoice, config.networks[invoice.network])

    typer.echo(json.dumps(guarded(read), indent=2))


def _admin_change(invoice_id: str, action: Any) -> None:
    from paywatch.invoices import get_invoice
    from paywatch.ledger import Ledger
    from paywatch.store.db import session_scope

    config, engine = open_app()
    ledger = Ledger(config.networks)

    def change() -> str:
        with session_scope(engine) as session:
            invoice = get_invoice(session, None, invoice_id)
            action(session, ledger, invoice, now(), actor="cli")
            return invoice.status

    status = guarded(change)
    console.print(f"{plain(invoice_id)}: {plain(status)}")


@invoice_app.command("cancel")
def invoice_cancel(invoice_id: str) -> None:
    """Cancel an unpaid invoice (sends invoice.cancelled)."""
    from paywatch.invoices import cancel_invoice

    _admin_change(invoice_id, cancel_invoice)


@invoice_app.command("mark-paid")
def invoice_mark_paid(invoice_id: str) -> None:
    """Mark an invoice paid by hand (COMPLETED with the marked_paid flag)."""
    from paywatch.invoices import mark_paid

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
    from paywatch.store.db import session_scope
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
    from paywatch.invoices import get_invoice
    from paywatch.ledger import Ledger
    from paywatch.store.db import session_scope
    from paywatch.unmatched import attach

    config, engine = open_app()
    ledger = Ledger(config.networks)

    def change() -> str:
        with session_scope(engine) as session:
            attach(session, ledger, transfer_id, invoice_id, now(), actor="cli")
            return get_invoice(session, None, invoice_id).status

    status = guarded(change)
    console.print(f"transfer {transfer_id} attached to {plain(invoice_id)}: {plain(status)}")


def _configure_logging(config: AppConfig) -> None:
    from paywatch.logs import configure

    configure(json_lines=config.settings.log_json)


def _single_worker(config: AppConfig) -> SingleWorkerLock:
    """The SQLite one-worker lock, taken before anything else is loaded: a second worker on one
    SQLite file refuses at once (exit 2) instead of after building its chain adapters."""
    from paywatch.lease import SingleWorkerLock

    single = SingleWorkerLock(config.settings.database_url)
    guarded(single.acquire)
    return single


@app.command("worker")
def worker() -> None:
    """Run the scanners, the expiry sweep and callback delivery until SIGTERM."""
    import asyncio

    config = get_config()
    _configure_logging(config)
    single = _single_worker(config)

    from paywatch.api.metrics_server import alongside, metrics_server
    from paywatch.runtime import open_database
    from paywatch.worker import Worker

    engine = guarded(lambda: open_database(config))
    guarded(lambda: asyncio.run(alongside(metrics_server(config, engine), Worker(config, engine, single=single).run())))


@app.command("run")
def run(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Run the API and the worker in one process."""
    import asyncio

    from paywatch.runtime import open_database

    config = get_config()
    _configure_logging(config)
    single = _single_worker(config)
    engine = guarded(lambda: open_database(config))
    guarded(lambda: asyncio.run(serve_all(config, engine, host, port, single=single)))


async def serve_all(
    config: AppConfig, engine: Any, host: str, port: int, *, single: SingleWorkerLock | None = None
) -> None:
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

    worker = Worker(config, engine, single=single)
    server = Server(uvicorn.Config(create_app(config, engine=engine), host=host, port=port, log_config=None))

    def stop() -> None:
        server.should_exit = True
        worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    from paywatch.api.metrics_server import alongside, metrics_server

    worker_task = asyncio.create_task(worker.run(install_signals=False))

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            worker.stop()
            await worker_task

    await alongside(metrics_server(config, engine), serve())


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
