"""Stores (merchants): creation, API-key authentication, webhook secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from paywatch.errors import AuthError
from paywatch.secretbox import SecretBox
from paywatch.store.models import Store


@dataclass(frozen=True)
class NewStore:
    """A created store and its credentials, shown once: the API key is stored only hashed, the
    webhook secret encrypted when a key is configured (``store.webhook_secret`` is then ciphertext)."""

    store: Store
    api_key: str
    webhook_secret: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_store(
    session: Session,
    name: str,
    now: datetime,
    *,
    callback_url: str | None = None,
    box: SecretBox | None = None,
) -> NewStore:
    """A new store with a fresh API key and webhook secret (sealed by ``box`` when given)."""
    api_key = "pw_" + secrets.token_urlsafe(32)
    webhook_secret = new_webhook_secret()
    store = Store(
        id="st_" + secrets.token_hex(8),
        name=name,
        api_key_hash=hash_key(api_key),
        webhook_secret=box.seal(webhook_secret) if box is not None else webhook_secret,
        callback_url=callback_url,
        created_at=now,
    )
    session.add(store)
    session.flush()
    return NewStore(store, api_key, webhook_secret)


def encrypt_stored_secrets(session: Session, box: SecretBox) -> int:
    """Seal every stored webhook secret under ``box``'s first key; the number of values changed.

    Plaintext rows (written before a key was set) are encrypted and rows under an older key are
    re-encrypted; running it again changes nothing. A no-op without a key.
    """
    if not box.enabled:
        return 0
    changed = 0
    for store in session.exec(select(Store).order_by(col(Store.id)).with_for_update()):
        for column in ("webhook_secret", "webhook_secret_previous"):
            stored = getattr(store, column)
            if stored and box.needs_sealing(stored):
                setattr(store, column, box.reseal(stored))
                changed += 1
        session.add(store)
    session.flush()
    return changed


def authenticate(session: Session, api_key: str | None) -> Store:
    """The store owning ``api_key``; AuthError when missing or unknown."""
    if not api_key:
        raise AuthError("missing API key: send X-Api-Key or Authorization: Bearer", field="X-Api-Key")
    store = session.exec(select(Store).where(Store.api_key_hash == hash_key(api_key))).first()
    if store is None:
        raise AuthError("unknown API key", field="X-Api-Key")
    return store
