"""The one exception tree of paywatch.

::

    PaywatchError
    ├── ConfigError              bad settings or networks.yaml (file, key path, expectation)
    ├── InputError               bad input from a merchant or an admin; names the field
    │   ├── AmountError
    │   ├── NotFoundError        unknown id, or an id of another store (never tells which)
    │   ├── AuthError            missing or wrong API key
    │   └── ConflictError        the request is valid but the current state forbids it
    ├── KeyMaterialError         a private key or mnemonic where an xpub belongs
    ├── UnavailableError         a dependency is down or lagging; retry later (HTTP 503)
    └── ChainError               a chain node could not answer as needed
        └── RetryableChainError  transient: timeouts, 429, 5xx, rate limits; retry with backoff

``Retryable`` is a marker class: ``isinstance(exc, Retryable)`` tells a caller that the same
call may succeed later and that nothing was changed by the failed one.
"""

from __future__ import annotations


class PaywatchError(Exception):
    """Base class of every error paywatch raises on purpose."""


class Retryable:
    """Marker: the operation failed transiently and may be retried unchanged."""


class ConfigError(PaywatchError):
    """Settings or networks.yaml are invalid; the message names file, key path and expectation."""


class InputError(PaywatchError):
    """Bad input; ``field`` names the offending field and ``code`` is machine readable."""

    status_code = 422

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class AmountError(InputError):
    """An amount that is not a positive decimal with at most the asset's decimals."""


class NotFoundError(InputError):
    """No such object for this caller."""

    status_code = 404

    def __init__(self, message: str, *, field: str | None = None, code: str = "not_found") -> None:
        super().__init__(message, field=field, code=code)


class AuthError(InputError):
    """Missing or wrong credentials."""

    status_code = 401

    def __init__(self, message: str, *, field: str | None = None, code: str = "unauthorized") -> None:
        super().__init__(message, field=field, code=code)


class ConflictError(InputError):
    """The request is well formed but the object's state does not allow it."""

    status_code = 409

    def __init__(self, message: str, *, field: str | None = None, code: str = "conflict") -> None:
        super().__init__(message, field=field, code=code)


class KeyMaterialError(ConfigError):
    """Private key material was offered where only a watch-only xpub is accepted."""


class UnavailableError(PaywatchError):
    """A dependency is unavailable or lagging; the caller should retry later."""


class ChainError(PaywatchError):
    """A chain node answered wrongly or not at all."""


class RetryableChainError(ChainError, Retryable):
    """A transient chain failure (timeout, 429, 5xx); retry with backoff and failover."""
