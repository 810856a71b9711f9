"""What every ``paywatch`` command shares: the clock, one error style and the configured database.

The CLI modules import at their top only Typer, Rich and light paywatch modules; a command imports
the services it uses (configuration, database, chains) in its body, so that ``paywatch --help`` and
a command that needs no chain client never pay for importing one (tests/test_cli_startup.py).

Errors paywatch raises on purpose become ``error: <message>`` on stderr and exit code 2.

Every string that did not come from paywatch itself (merchant URLs, redirect targets, response
excerpts, order ids, error texts of remote systems) goes through :func:`plain` before it reaches the
terminal: terminal escape sequences and control characters are removed and Rich markup is escaped,
so no such string can crash a command, restyle its output or move the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape

from paywatch.errors import PaywatchError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from paywatch.config import AppConfig

T = TypeVar("T")


# ESC-introduced sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), and two-byte escapes
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_])|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_safe(value: object) -> str:
    """``value`` as text without terminal escape sequences; other control characters become U+FFFD."""
    return _CONTROLS.sub("\ufffd", _ESCAPES.sub("", str(value)))


def plain(value: object) -> str:
    """An external string, safe inside Rich output: no escapes or control characters, markup escaped."""
    return escape(terminal_safe(value))


def now() -> datetime:
    return datetime.now(UTC)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {terminal_safe(message)}", err=True)
    return typer.Exit(code)


def guarded(func: Callable[[], T]) -> T:
    """Run ``func`` and turn paywatch errors into a one-line message and exit code 2."""
    try:
        return func()
    except PaywatchError as exc:
        raise fail(str(exc)) from None


def get_config() -> AppConfig:
    """Settings and networks.yaml, validated (a command loads them once, at its start)."""
    return guarded(load_app_config)


def load_app_config() -> AppConfig:
    """:func:`paywatch.config.load_config`, imported when a command first needs it: the CLI imports
    what a command uses when it runs, so that ``--help`` and the light commands start fast."""
    from paywatch.config import load_config

    return load_config()


_OPENED: list[Engine] = []


def open_app() -> tuple[AppConfig, Engine]:
    """The configuration and an engine on an up-to-date schema (closed by :func:`close_opened`)."""
    from paywatch.runtime import open_database

    config = get_config()
    engine = guarded(lambda: open_database(config))
    _OPENED.append(engine)
    return config, engine


def close_opened() -> None:
    """Close the connection pools of the engines commands opened in this process: a process that
    runs commands in-process (an embedding program, the tests) must not keep their connections."""
    while _OPENED:
        _OPENED.pop().dispose()
