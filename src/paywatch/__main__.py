"""``python -m paywatch`` runs the CLI."""

from paywatch.cli import app

app(prog_name="paywatch")
