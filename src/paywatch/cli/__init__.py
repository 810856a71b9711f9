"""The ``paywatch`` command line: one module per command group (Typer)."""

from paywatch.cli.app import app

__all__ = ["app"]
