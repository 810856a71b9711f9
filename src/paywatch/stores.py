"""Stores (merchants): creation, API-key authentication, webhook secrets and payment policy."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from paywatch.audit import audit
from paywatch.errors import AuthError, InputError, NotFoundError
from paywatch.netguard import DEFAULT_PORTS, validate_callback_url
from paywatch.secretbox import SecretBox
from paywatch.store.models import Store

MAX_LATE_WINDOW = 90 * 24 * 3600  # a late window keeps unique amounts and memos reserved; keep it bounded
_TOLERANCE = re.compile(r"^(?P<number>[0-9]{1,3}(?:\.[0-9]{1,8})?)(?P<percent>%?)\Z")
_DURATION = re.compile(r"^(?:[0-9]{1,9}[dhms])+\Z")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


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


#: built once (every API request runs it)
_BY_KEY_HASH = select(Store).where(col(Store.api_key_hash) == bindparam("hash"))


def require_key(api_key: str | None) -> str:
    """``api_key`` when one was sent; AuthError when missing."""
    if not api_key:
        raise AuthError("missing API key: send X-Api-Key or Authorization: Bearer", field="X-Api-Key")
    return api_key


def authenticate(session: Session, api_key: str | None) -> Store:
    """The store owning ``api_key``; AuthError when missing or unknown."""
    store = session.exec(_BY_KEY_HASH, params={"hash": hash_key(require_key(api_key))}).first()
    if store is None:
        raise AuthError("unknown API key", field="X-Api-Key")
    return store


def get_store(session: Session, store_id: str) -> Store:
    store = session.get(Store, store_id) if "\x00" not in store_id else None
    if store is None:
        raise NotFoundError(f"no store {store_id!r}", field="store")
    return store


def parse_tolerance(value: object, *, field: str = "underpaid_tolerance") -> Decimal:
    """``"0.5%"`` or the fraction ``"0.005"``: how much less than the amount still settles an invoice.

    A decimal string (never a float), from 0 up to but excluding 100 %, at most 8 decimal places as written.
    """
    text = value.strip() if isinstance(value, str) else None
    match = _TOLERANCE.match(text) if text is not None else None
    if match is None:
        raise InputError(f'{field} must be a percentage such as "0.5%" or a fraction such as "0.005"', field=field)
    number = Decimal(match.group("number"))
    fraction = number / 100 if match.group("percent") else number
    if not Decimal(0) <= fraction < Decimal(1):
        raise InputError(f"{field} must be at least 0 and below 100%", field=field)
    return fraction


def format_tolerance(fraction: Decimal) -> str:
    """The stored and shown form: a plain decimal fraction (``"0.005"``, ``"0"``)."""
    text = format(fraction.normalize(), "f")
    return text if text != "-0" else "0"


def parse_duration(value: object, *, field: str = "late_window") -> int:
    """Seconds from an integer or a string such as ``"24h"``, ``"90m"``, ``"1d12h"`` or ``"3600"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f'{field} must be seconds or a duration such as "24h", "30m", "7d"', field=field)
    if isinstance(value, int):
        seconds = value
    elif value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 12:
        seconds = int(value.strip())
    elif _DURATION.match(value.strip().lower()):
        parts = re.findall(r"([0-9]+)([dhms])", value.strip().lower())
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    else:
        raise InputError(f'{field} must be seconds or a duration such as "24h", "30m", "7d"', field=field)
    if not 0 <= seconds <= MAX_LATE_WINDOW:
        raise InputError(f"{field} must be between 0 and 90 days", field=field)
    return seconds


_UNSET: Any = object()


def update_store(
    session: Session,
    store: Store,
    now: datetime,
    *,
    actor: str,
    allow_private_callbacks: bool,
    callback_ports: Collection[int] = DEFAULT_PORTS,
    underpaid_tolerance: object = _UNSET,
    accept_late_payments: object = _UNSET,
    late_window: object = _UNSET,
    callback_url: object = _UNSET,
) -> Store:
    """Change a store's payment policy and callback URL; only the arguments given are changed.

    Everything is validated before anything changes (a bad field changes nothing). A policy change
    bumps ``policy_version``, which the scanners watch, so it applies without a restart.
    """
    changes: dict[str, Any] = {}
    if underpaid_tolerance is not _UNSET:
        changes["underpaid_tolerance"] = format_tolerance(parse_tolerance(underpaid_tolerance))
    if accept_late_payments is not _UNSET:
        if not isinstance(accept_late_payments, bool):
            raise InputError("accept_late_payments must be true or false", field="accept_late_payments")
        changes["accept_late_payments"] = accept_late_payments
    if late_window is not _UNSET:
        changes["late_window_seconds"] = parse_duration(late_window)
    if callback_url is not _UNSET:
        if callback_url is not None:
            if not isinstance(callback_url, str):
                raise InputError("callback_url must be a URL string or null", field="callback_url")
            validate_callback_url(callback_url, allow_private=allow_private_callbacks, ports=callback_ports)
        changes["callback_url"] = callback_url
    changed = {key: value for key, value in changes.items() if getattr(store, key) != value}
    if not changed:
        return store
    for key, value in changed.items():
        setattr(store, key, value)
    if set(changed) - {"callback_url"}:
        store.policy_version += 1
    session.add(store)
    audit(session, now, actor, "store.update", store.id, **changed)
    session.flush()
    return store


def store_view(store: Store) -> dict[str, Any]:
    """The store as ``GET /v1/store`` shows it: its policy and callback URL, never a secret."""
    return {
        "id": store.id,
        "name": store.name,
        "underpaid_tolerance": format_tolerance(Decimal(store.underpaid_tolerance)),
        "accept_late_payments": store.accept_late_payments,
        "late_window": store.late_window_seconds,
        "callback_url": store.callback_url,
    }
