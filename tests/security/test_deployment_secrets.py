"""Deployment secrets: compose reads an untracked .env, and start-up refuses the example password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from paywatch.config import Settings

pytestmark = pytest.mark.attack("secret_leak")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://paywatch:change-me@postgres:5432/paywatch",
        "postgresql+psycopg://paywatch:change-me@db.internal/paywatch",
        "postgresql://paywatch:CHANGE-ME@postgres/paywatch",
        "postgresql://paywatch:changeme@postgres/paywatch",
        "postgresql://paywatch:change%2Dme@postgres/paywatch",  # percent-encoded
    ],
)
def test_start_up_refuses_the_example_database_password(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PAYWATCH_DATABASE_URL", url)
    with pytest.raises(ValueError, match="example password") as caught:
        Settings()
    assert "POSTGRES_PASSWORD" in str(caught.value)


def test_compose_reads_an_untracked_env_file() -> None:
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    assert compose["x-paywatch"]["env_file"] == ".env"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, capture_output=True
    ).returncode
    assert ignored == 0, "docker/.env must be ignored by git"
    tracked = subprocess.run(["git", "ls-files", "docker"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert "docker/.env" not in tracked
    example = (ROOT / "docker/example.env").read_text()
    assert "change-me" not in example
    assert "POSTGRES_PASSWORD=\n" in example  # left empty: compose then refuses to start without one
