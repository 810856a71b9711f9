"""Merchant-controlled text in the admin CLI: Rich markup and terminal escapes are shown, never run.

A redirect ``Location``, a response excerpt, an order id or a stored error text is printed
literally: it can neither crash a command (``Location: [/]`` once did), restyle or fake its output,
nor send escape sequences to the admin's terminal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from paywatch.cli import app as cli_app
from paywatch.config import AppConfig
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent
from tests.conftest import TEST_NETWORKS
from tests.support.api_helpers import make_api
from tests.support.callback_receiver import FakeClock, Receiver, Reply, seed_store

pytestmark = pytest.mark.attack("hostile_input")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    return {
        "PAYWATCH_DATABASE_URL": db_url,
        "PAYWATCH_NETWORKS": str(networks),
        "PAYWATCH_ALLOW_PRIVATE_CALLBACKS": "1",
        "COLUMNS": "400",  # Rich reads the width from the environment: no wrapping inside the checked text
    }


def _clean(result: Result) -> str:
    """The output, after checking that the command ended by itself (no traceback) and emitted no escapes."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "\x1b" not in result.output and "\x9b" not in result.output and "\x07" not in result.output
    return result.output


LOCATIONS = ["[/]", "[bold red]FAKE: delivered: HTTP 200[/]", "[link=https://evil.example]x[/link]", "\\[/]", "[/bold]"]


@pytest.mark.parametrize("location", LOCATIONS)
def test_callbacks_test_prints_a_hostile_location_literally(
    engine: Engine, receiver: Receiver, cli_env: dict[str, str], location: str
) -> None:
    store_id, _ = seed_store(engine, receiver.url("/cb"), FakeClock()())
    receiver.plan("/cb", Reply(302, b"", headers={"Location": location}))
    result = CliRunner().invoke(cli_app, ["callbacks", "test", store_id], env=cli_env, terminal_width=400)
    out = _clean(result)
    assert result.exit_code == 1
    assert f"location: {location}" in " ".join(out.split())  # the console may wrap the line anywhere
    listed = CliRunner().invoke(cli_app, ["callbacks", "list", "--wide"], env=cli_env, terminal_width=400)
    assert listed.exit_code == 0 and _clean(listed)


EXCERPTS = [
    b"\x1b[2J\x1b[Hscreen cleared",
    b"\x1b]0;pwned title\x07body",
    b"\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "\u009b31mC1 CSI".encode(),
    b"[red]not red[/red] [/]",
]


@pytest.mark.parametrize("body", EXCERPTS)
def test_callbacks_test_strips_terminal_escapes_from_a_response_excerpt(
    engine: Engine, receiver: Receiver, cli_env: dict[str, str], body: bytes
) -> None:
    store_id, _ = seed_store(engine, receiver.url("/cb"), FakeClock()())
    receiver.plan("/cb", Reply(500, body))
    result = CliRunner().invoke(cli_app, ["callbacks", "test", store_id], env=cli_env, terminal_width=400)
    out = _clean(result)
    assert result.exit_code == 1 and "failed: HTTP 500" in out
    assert "response:" in out


ORDER_IDS = ["[/]", "[bold]order[/bold]", "\x1b[31mred order", "A\rFAKE LINE"]


@pytest.mark.parametrize("order_id", ORDER_IDS)
def test_invoice_list_shows_hostile_order_ids_literally(
    engine: Engine, app_config: AppConfig, cli_env: dict[str, str], order_id: str
) -> None:
    api = make_api(engine, app_config)
    created = api.client.post(
        "/v1/invoices",
        json={"network": "ethereum", "asset": "USDT", "amount": "1", "order_id": order_id, "description": order_id},
        headers=api.headers(),
    )
    assert created.status_code == 201, created.text
    result = CliRunner().invoke(cli_app, ["invoice", "list", "--wide"], env=cli_env, terminal_width=400)
    out = _clean(result)
    assert result.exit_code == 0 and "\r" not in out
    if "\x1b" not in order_id and "\r" not in order_id:
        assert order_id in out
    cancelled = CliRunner().invoke(cli_app, ["invoice", "cancel", created.json()["id"]], env=cli_env)
    assert cancelled.exit_code == 0 and _clean(cancelled)


def test_stored_error_text_with_markup_and_escapes_is_listed_literally(
    engine: Engine, receiver: Receiver, cli_env: dict[str, str]
) -> None:
    store_id, _ = seed_store(engine, receiver.url("/cb"), FakeClock()())
    receiver.plan("/cb", Reply(500, b"x"))
    assert CliRunner().invoke(cli_app, ["callbacks", "test", store_id], env=cli_env).exit_code == 1
    with session_scope(engine) as session:
        for event in session.exec(select(CallbackEvent)).all():
            event.last_status_code = None
            event.last_error = "[/] \x1b[5mblink\x1b[0m [bold]fake[/bold]"
            session.add(event)
    result = CliRunner().invoke(cli_app, ["callbacks", "list", "--wide"], env=cli_env, terminal_width=400)
    out = _clean(result)
    assert result.exit_code == 0 and "[/] blink [bold]fake[/bold]" in out
