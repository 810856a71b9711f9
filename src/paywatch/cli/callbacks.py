"""``paywatch callbacks ...`` and ``paywatch store rotate-secret``: thin commands over callbacks.admin."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from paywatch.cli.support import fail, guarded, open_app, plain
from paywatch.cli.support import now as utc_now
from paywatch.cli.tables import Column, print_table, short_time

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from paywatch.callbacks.dispatcher import Outcome
    from paywatch.config import AppConfig

callbacks_app = typer.Typer(help="Status callbacks: delivery log, redelivery, test events.", no_args_is_help=True)
console = Console()


def _send_now(config: AppConfig, engine: Engine, event_id: int) -> Outcome | None:
    import asyncio

    from paywatch.callbacks.dispatcher import Dispatcher

    async def send() -> Outcome | None:
        dispatcher = Dispatcher(engine, config.settings, utc_now)
        try:
            return await dispatcher.deliver_now(event_id)
        finally:
            await dispatcher.aclose()

    return asyncio.run(send())


def _report(outcome: Outcome | None, webhook_id: str) -> None:
    if outcome is None:
        raise fail(f"{webhook_id} could not be sent now (store callbacks disabled, or already claimed)")
    ok = outcome.status_code is not None and 200 <= outcome.status_code < 300
    detail = f"HTTP {outcome.status_code}" if outcome.status_code is not None else "no answer"
    if outcome.error:
        detail += f" ({outcome.error})"
    console.print(f"{plain(webhook_id)}: {'delivered' if ok else 'failed'}: {plain(detail)} in {outcome.latency_ms} ms")
    if not ok:
        if outcome.excerpt:
            console.print(f"response: {plain(outcome.excerpt[:200])}")
        raise typer.Exit(1)


@callbacks_app.command("list")
def list_callbacks(
    failed: Annotated[bool, typer.Option("--failed", help="Only dead events and pending ones that failed")] = False,
    store: Annotated[str | None, typer.Option(help="Only this store id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, ids and errors in full")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON with every attempt")] = False,
) -> None:
    """List callback events, newest first."""
    from paywatch.callbacks import admin
    from paywatch.store.db import session_scope

    _, engine = open_app()

    def read() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        with session_scope(engine) as session:
            events = admin.list_events(session, failed_only=failed, store_id=store, limit=limit, with_attempts=as_json)
            return events, admin.disabled_stores(session)

    rows, disabled = guarded(read)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        row["last"] = str(row["last_status_code"] or "") or str(row["last_error"] or "")
        row["event"] = str(row["type"]).removeprefix("invoice.")
    columns = [
        Column("id (webhook-id)", "id", no_wrap=True),
        Column("event", "event"),
        Column("invoice", "invoice_id", no_wrap=True),
        Column("state", "state"),
        Column("tries", "attempt_count", justify="right"),
        Column("last", "last"),
        Column("next attempt", "next_attempt_at"),
        Column("created", "created_at", compact=False),
    ]
    compact = {"last": lambda v: str(v)[:24], "next_attempt_at": short_time, "invoice_id": lambda v: v or "-"}
    title = f"{len(rows)} callback events" + (" (failed)" if failed else "")
    print_table(console, title, columns, rows, wide=wide, compact=compact)
    for off in disabled:
        console.print(
            f"[bold red]store {plain(off['store_id'])}[/]: callbacks disabled since {plain(off['disabled_at'])} "
            f"({plain(off['callback_url'])} answered 410 Gone); "
            f"`paywatch callbacks enable {plain(off['store_id'])}` resumes them"
        )


@callbacks_app.command("redeliver")
def redeliver(
    delivery_id: Annotated[str, typer.Argument(help="The event's id, its webhook-id (msg_...)")],
    now: Annotated[bool, typer.Option("--now", help="Send it from this process instead of the worker")] = False,
) -> None:
    """Queue an event again (same webhook-id); the worker sends it on its next run."""
    from paywatch.callbacks import admin
    from paywatch.store.db import session_scope

    config, engine = open_app()

    def queue() -> tuple[int, str]:
        with session_scope(engine) as session:
            event = admin.redeliver(session, delivery_id, utc_now(), actor="cli")
            assert event.id is not None
            return event.id, event.webhook_id

    event_id, webhook_id = guarded(queue)
    if now:
        _report(_send_now(config, engine, event_id), webhook_id)
    else:
        console.print(f"{plain(webhook_id)}: queued for redelivery")


@callbacks_app.command("test")
def send_test(store: Annotated[str, typer.Argument(help="Store id")]) -> None:
    """Send a signed webhook.test event to the store's callback URL now; exit 1 unless it gets a 2xx."""
    from paywatch.callbacks import admin
    from paywatch.store.db import session_scope

    config, engine = open_app()

    def queue() -> tuple[int, str]:
        with session_scope(engine) as session:
            event = admin.send_test_event(session, store, utc_now(), actor="cli")
            assert event.id is not None
            return event.id, event.webhook_id

    event_id, webhook_id = guarded(queue)
    _report(_send_now(config, engine, event_id), webhook_id)


@callbacks_app.command("enable")
def enable(store: Annotated[str, typer.Argument(help="Store id")]) -> None:
    """Re-enable a store's callbacks after its endpoint answered 410 Gone."""
    from paywatch.callbacks import admin
    from paywatch.store.db import session_scope

    _, engine = open_app()

    def change() -> None:
        with session_scope(engine) as session:
            admin.enable_callbacks(session, store, utc_now(), actor="cli")

    guarded(change)
    console.print(f"{plain(store)}: callbacks enabled")


def rotate_secret(
    store: Annotated[str, typer.Argument(help="Store id")],
    grace_hours: Annotated[
        float, typer.Option(min=0, max=720, help="Hours the old secret keeps signing beside the new one")
    ] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Give a store a new webhook secret (shown once); the old one stays valid for the grace period."""
    from paywatch.callbacks import admin
    from paywatch.store.db import session_scope

    config, engine = open_app()

    def change() -> admin.RotatedSecret:
        with session_scope(engine) as session:
            return admin.rotate_secret(
                session,
                store,
                utc_now(),
                grace=timedelta(hours=grace_hours),
                actor="cli",
                box=config.settings.secret_box(),
            )

    rotated = guarded(change)
    until = rotated.previous_valid_until.isoformat() if rotated.previous_valid_until else None
    out: dict[str, Any] = {
        "store_id": rotated.store_id,
        "webhook_secret": rotated.webhook_secret,
        "previous_valid_until": until,
    }
    if as_json:
        typer.echo(json.dumps(out))
        return
    console.print(f"new webhook secret for {plain(rotated.store_id)} (shown once): {plain(rotated.webhook_secret)}")
    console.print(
        f"the previous secret stays valid until {plain(until)}" if until else "the previous secret is revoked"
    )
