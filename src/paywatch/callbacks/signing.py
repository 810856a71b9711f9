"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

Secrets look like ``whsec_<base64>``; the HMAC key is the decoded base64 part. During a secret
rotation both the new and the previous secret sign each message, space separated, so receivers
holding either one can verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from paywatch.store.models import Store

PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError when it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("webhook secret must start with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"webhook secret is not valid base64: {exc}") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over the exact body bytes."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def active_secrets(store: Store, now: datetime) -> list[str]:
    """The current secret, plus the previous one while its grace period lasts."""
    secrets = [store.webhook_secret]
    previous, until = store.webhook_secret_previous, store.webhook_secret_previous_until
    if previous and until is not None and now < until and previous != store.webhook_secret:
        secrets.append(previous)
    return secrets


def webhook_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every given secret."""
    signature = " ".join(sign(decode_secret(s), msg_id, timestamp, body) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    *,
    tolerance: timedelta = timedelta(minutes=5),
) -> bool:
    """Receiver side: True when one ``v1`` signature matches and the timestamp is within tolerance.

    ``headers`` must have lower-case names. Used by the demo's receiver; merchants can copy it.
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not stamp.isdigit() or not signatures:
        return False
    if abs(now.timestamp() - int(stamp)) > tolerance.total_seconds():
        return False
    try:
        expected = sign(decode_secret(secret), msg_id, int(stamp), body)
    except ValueError:
        return False
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures.split(" "))
