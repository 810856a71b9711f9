"""Webhook secrets at rest: with PAYWATCH_SECRET_KEY set they are stored Fernet-encrypted.

Signing still uses the plaintext; plaintext rows written before the key was set keep working and
are encrypted by ``paywatch db encrypt-secrets`` (also run by ``paywatch db upgrade``); a key list
``new,old`` rotates the encryption key; rotating a store's webhook secret keeps both secrets
encrypted and both signing during the grace period.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from paywatch.callbacks import admin
from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.cli import app as cli_app
from paywatch.config import AppConfig, NetworkConfig, Settings
from paywatch.secretbox import SEALED_PREFIX, SecretBox
from paywatch.store.db import session_scope
from paywatch.stores import create_store, encrypt_stored_secrets
from tests.conftest import TEST_NETWORKS
from tests.support.callback_receiver import FakeClock, Receiver, events_of, seed_invoice, verify

pytestmark = pytest.mark.attack("secret_leak")
KEY1 = Fernet.generate_key().decode()
KEY2 = Fernet.generate_key().decode()


def _raw_secrets(engine: Engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, webhook_secret, webhook_secret_previous FROM stores ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in rows]


def _cli_env(db_url: str, tmp_path: Path, key: str | None) -> dict[str, str]:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {"PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks)}
    if key is not None:
        env["PAYWATCH_SECRET_KEY"] = key
    return env


def test_store_create_with_a_key_stores_the_secret_encrypted(engine: Engine, db_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["store", "create", "shop", "--json"], env=_cli_env(db_url, tmp_path, KEY1))
    assert result.exit_code == 0, result.output
    secret = json.loads(result.output)["webhook_secret"]
    assert secret.startswith("whsec_")
    ((_, stored, _),) = _raw_secrets(engine)
    assert secret not in stored and not stored.startswith("whsec_")
    assert stored.startswith(SEALED_PREFIX)
    assert SecretBox([KEY1]).open(stored) == secret


def _settings(app_config: AppConfig, key: str | None) -> Settings:
    update: dict[str, object] = {"allow_private_callbacks": True, "secret_key": SecretStr(key) if key else None}
    return app_config.settings.model_copy(update=update)


async def _deliver(engine: Engine, settings: Settings, networks: dict[str, NetworkConfig], receiver: Receiver) -> None:
    clock = FakeClock()
    with session_scope(engine) as session:
        store_ids = [row[0] for row in session.connection().execute(text("SELECT id FROM stores"))]
    for store_id in store_ids:
        seed_invoice(engine, AppConfig(settings=settings, networks=networks), store_id, clock())
    d = Dispatcher(engine, settings, clock, rng=random.Random(1))
    await d.run_once()
    await d.aclose()


async def test_encrypted_and_legacy_plaintext_rows_both_sign_correctly(
    engine: Engine, app_config: AppConfig
) -> None:
    settings = _settings(app_config, KEY1)
    with Receiver() as receiver, session_scope(engine) as session:
        sealed = create_store(session, "new", FakeClock()(), callback_url=receiver.url("/a"), box=SecretBox([KEY1]))
        legacy = create_store(session, "old", FakeClock()(), callback_url=receiver.url("/b"))  # no key: plaintext
        plain_secrets = {"/a": sealed.webhook_secret, "/b": legacy.webhook_secret}
    assert [r[1].startswith(SEALED_PREFIX) for r in _raw_secrets(engine)].count(True) == 1
    with Receiver() as receiver:
        with session_scope(engine) as session:
            for store_id, path in ((sealed.store.id, "/a"), (legacy.store.id, "/b")):
                session.connection().execute(
                    text("UPDATE stores SET callback_url = :u WHERE id = :i"), {"u": receiver.url(path), "i": store_id}
                )
        await _deliver(engine, settings, app_config.networks, receiver)
        assert sorted(r.path for r in receiver.received) == ["/a", "/b"]
        for got in receiver.received:
            verify(got, plain_secrets[got.path])
    assert {e.state for e in events_of(engine)} == {"delivered"}


def test_encrypt_secrets_command_encrypts_old_rows_and_rotates_keys(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    now = FakeClock()()
    with session_scope(engine) as session:
        store = create_store(session, "old", now).store  # plaintext, as written before the key existed
        store_id, first = store.id, store.webhook_secret
    with session_scope(engine) as session:
        rotated = admin.rotate_secret(session, store_id, now, grace=timedelta(hours=1))  # previous set too
    runner = CliRunner()
    done = runner.invoke(cli_app, ["db", "encrypt-secrets"], env=_cli_env(db_url, tmp_path, KEY1))
    assert done.exit_code == 0, done.output
    assert "secret(s) encrypted" in done.output  # on SQLite opening the database already sealed them
    ((_, current, previous),) = _raw_secrets(engine)
    assert current.startswith(SEALED_PREFIX) and previous is not None and previous.startswith(SEALED_PREFIX)
    assert first not in current + previous and rotated.webhook_secret not in current + previous
    box1 = SecretBox([KEY1])
    assert (box1.open(current), box1.open(previous)) == (rotated.webhook_secret, first)
    again = runner.invoke(cli_app, ["db", "encrypt-secrets"], env=_cli_env(db_url, tmp_path, KEY1))
    assert again.exit_code == 0 and "0 secret(s) encrypted" in again.output

    # key rotation: new key first, old key still listed; rows move to the new key
    rotate = runner.invoke(cli_app, ["db", "upgrade"], env=_cli_env(db_url, tmp_path, f"{KEY2},{KEY1}"))
    assert rotate.exit_code == 0, rotate.output
    ((_, current2, previous2),) = _raw_secrets(engine)
    box2 = SecretBox([KEY2])
    assert (box2.open(current2), box2.open(previous2 or "")) == (rotated.webhook_secret, first)


def test_secret_rotation_under_encryption_keeps_both_secrets_sealed(engine: Engine) -> None:
    box = SecretBox([KEY1])
    now = FakeClock()()
    with session_scope(engine) as session:
        created = create_store(session, "shop", now, box=box)
    with session_scope(engine) as session:
        rotated = admin.rotate_secret(session, created.store.id, now, grace=timedelta(hours=1), box=box)
    ((_, current, previous),) = _raw_secrets(engine)
    assert rotated.webhook_secret.startswith("whsec_") and rotated.webhook_secret != created.webhook_secret
    assert box.open(current) == rotated.webhook_secret and box.open(previous or "") == created.webhook_secret


def test_encrypted_rows_without_the_key_fail_clearly_not_with_a_leak(engine: Engine) -> None:
    with session_scope(engine) as session:
        stored = create_store(session, "shop", FakeClock()(), box=SecretBox([KEY1])).store.webhook_secret
    with pytest.raises(Exception) as caught:
        SecretBox(None).open(stored)
    assert "PAYWATCH_SECRET_KEY" in str(caught.value) and stored not in str(caught.value)
    with pytest.raises(Exception) as wrong:
        SecretBox([KEY2]).open(stored)
    assert "PAYWATCH_SECRET_KEY" in str(wrong.value) and KEY2 not in str(wrong.value)
    with session_scope(engine) as session:
        assert encrypt_stored_secrets(session, SecretBox([KEY1])) == 0


@pytest.mark.parametrize(
    "bad", ["not-a-key", "a" * 44, f"{KEY1},", "short"], ids=["word", "44-chars", "trailing-comma", "short"]
)
def test_a_malformed_key_is_refused_at_start_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("PAYWATCH_SECRET_KEY", bad)
    with pytest.raises(ValueError) as caught:
        Settings()
    assert "Fernet" in str(caught.value)
    for part in bad.split(","):
        if part:
            assert part not in str(caught.value)
