"""Webhook secrets at rest: Fernet encryption when ``PAYWATCH_SECRET_KEY`` is set.

``PAYWATCH_SECRET_KEY`` holds one or more Fernet keys separated by commas. The first encrypts;
every one of them decrypts, so a key is rotated by putting the new key first, running
``paywatch db encrypt-secrets`` (which re-encrypts every row under the first key), then dropping
the old one. A sealed value is ``fernet:<token>``; anything else is a plaintext secret written
before encryption was switched on, which keeps working until it is encrypted.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from paywatch.errors import ConfigError

SEALED_PREFIX = "fernet:"


def parse_keys(value: str) -> list[str]:
    """The comma-separated keys; ValueError (never echoing a key) when one is not a Fernet key."""
    keys = [part.strip() for part in value.split(",")]
    if not keys or any(not key for key in keys):
        raise ValueError("expected one or more Fernet keys separated by commas, with no empty entries")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with `paywatch db new-secret-key`)"
            ) from None
    return keys


class SecretBox:
    """Seals and opens stored secrets; without keys it stores plaintext (and opens only plaintext)."""

    def __init__(self, keys: Sequence[str] | None) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None
        self._primary = Fernet(keys[0]) if keys else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, plaintext: str) -> str:
        """The value to store for ``plaintext`` (encrypted under the first key when keys are set)."""
        if self._fernet is None:
            return plaintext
        return SEALED_PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The plaintext of a stored value; ConfigError when it is sealed and no key opens it."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        if self._fernet is None:
            raise ConfigError("a webhook secret is stored encrypted but PAYWATCH_SECRET_KEY is not set")
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise ConfigError(
                "a stored webhook secret cannot be decrypted with any key in PAYWATCH_SECRET_KEY"
            ) from None

    def needs_sealing(self, stored: str) -> bool:
        """True when ``stored`` is plaintext, or sealed under a key other than the first."""
        if self._primary is None:
            return False
        if not stored.startswith(SEALED_PREFIX):
            return True
        try:
            self._primary.decrypt(stored[len(SEALED_PREFIX) :].encode("ascii"))
        except InvalidToken:
            return True
        return False

    def reseal(self, stored: str) -> str:
        """``stored`` sealed under the first key (plaintext is encrypted, other keys re-encrypted)."""
        return self.seal(self.open(stored))


def new_key() -> str:
    """A fresh Fernet key for ``PAYWATCH_SECRET_KEY``."""
    return Fernet.generate_key().decode("ascii")
