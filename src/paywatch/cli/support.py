"""What every ``paywatch`` command shares: the clock, one error style and the configured database.

Errors paywatch raises on purpose become ``error: <message>`` on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import typer
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig, load_config
from paywatch.errors import PaywatchError
from paywatch.runtime import open_database

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(func: Callable[[], T]) -> T:
    """Run ``func`` and turn paywatch errors into a one-line message and exit code 2."""
    try:
        return func()
    except PaywatchError as exc:
        raise fail(str(exc)) from None


def get_config() -> AppConfig:
    """Settings and networks.yaml, validated (a command loads them once, at its start)."""
    return guarded(load_config)


def open_app() -> tuple[AppConfig, Engine]:
    """The configuration and an engine on an up-to-date schema."""
    config = get_config()
    return config, guarded(lambda: open_database(config))
