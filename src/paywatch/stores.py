"""Stores (merchants): creation, API-key authentication, webhook secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from paywatch.errors import AuthError
from paywatch.store.models import Store


@dataclass(frozen=True)
class NewStore:
    """A created store and its credentials; the API key is shown once and stored only hashed."""

    store: Store
    api_key: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_store(session: Session, name: str, now: datetime, *, callback_url: str | None = None) -> NewStore:
    api_key = "pw_" + secrets.token_urlsafe(32)
    store = Store(
        id="st_" + secrets.token_hex(8),
        name=name,
        api_key_hash=hash_key(api_key),
        webhook_secret=new_webhook_secret(),
        callback_url=callback_url,
        created_at=now,
    )
    session.add(store)
    session.flush()
    return NewStore(store, api_key)


def authenticate(session: Session, api_key: str | None) -> Store:
    """The store owning ``api_key``; AuthError when missing or unknown."""
    if not api_key:
        raise AuthError("missing API key: send X-Api-Key or Authorization: Bearer", field="X-Api-Key")
    store = session.exec(select(Store).where(Store.api_key_hash == hash_key(api_key))).first()
    if store is None:
        raise AuthError("unknown API key", field="X-Api-Key")
    return store
