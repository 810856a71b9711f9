"""Per-store token buckets: invoice creation and redelivery answer 429 with ``Retry-After`` when spent.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_minute``; each request takes one.
Time comes from the API's injected clock. Buckets live in the API process: with several replicas
behind a load balancer each replica enforces its own limit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime

from paywatch.config import Settings
from paywatch.errors import InputError


class RateLimitedError(InputError):
    """The store spent its budget for this action; ``retry_after`` seconds until the next token."""

    status_code = 429

    def __init__(self, action: str, retry_after: int) -> None:
        super().__init__(
            f"too many {action} requests for this store; retry in {retry_after} s", field=None, code="rate_limited"
        )
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    updated: datetime


class TokenBuckets:
    """One token bucket per key (a store id); ``rate_per_minute == 0`` means unlimited."""

    def __init__(self, action: str, rate_per_minute: float, burst: int) -> None:
        self.action = action
        self._rate = rate_per_minute / 60.0
        self._burst = max(1, burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: datetime) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimitedError saying when one is back."""
        if self._rate <= 0:
            return
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self._burst), now)
            elapsed = max(0.0, (now - bucket.updated).total_seconds())
            bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._rate)
            bucket.updated = max(bucket.updated, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / self._rate
        raise RateLimitedError(self.action, max(1, math.ceil(wait - 1e-9)))


@dataclass(frozen=True)
class RateLimits:
    """The API's buckets, built from the settings."""

    invoices: TokenBuckets
    redeliveries: TokenBuckets

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            invoices=TokenBuckets("invoice creation", settings.invoice_rate_per_minute, settings.invoice_burst),
            redeliveries=TokenBuckets("redelivery", settings.redeliver_rate_per_minute, settings.redeliver_burst),
        )
