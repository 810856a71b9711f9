"""The retry schedule and the verdict on one attempt. Pure: time and randomness are parameters.

Attempt 1 goes out at once; after failure number ``n`` the next attempt waits ``RETRY_DELAYS[n-1]``
(about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: some three days in all), each
stretched or shrunk by up to ``JITTER`` so that a recovering receiver is not hit by a thundering
herd. After ``MAX_ATTEMPTS`` failures the event is dead (visible, and redeliverable by an admin).

A 429 or 503 with a ``Retry-After`` header never gets its next attempt sooner than the receiver
asked (up to 24 h): the wait is the longer of the two. A receiver that keeps answering
``Retry-After: 1`` therefore cannot burn the three-day schedule in seconds, and each such answer
still counts as an attempt, so the schedule keeps its end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.1
MAX_RETRY_AFTER = timedelta(hours=24)


class EventState(enum.StrEnum):
    """Where an outbox event stands."""

    PENDING = "pending"  # waiting for its next attempt (or for an earlier event of its invoice)
    DELIVERED = "delivered"  # a 2xx was received
    DEAD = "dead"  # attempts exhausted, or the endpoint answered 410; an admin may redeliver
    SKIPPED = "skipped"  # neither the invoice nor its store has a callback URL


def next_delay(failures: int, jitter_sample: float) -> timedelta | None:
    """Wait after the ``failures``-th failed attempt; None once the schedule is exhausted.

    ``jitter_sample`` is a number in [0, 1); 0.5 gives the nominal delay.
    """
    if failures < 1 or failures > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[failures - 1]
    factor = 1.0 + JITTER * (2.0 * min(max(jitter_sample, 0.0), 1.0) - 1.0)
    return timedelta(microseconds=round(base / timedelta(microseconds=1) * factor))


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), 10**7))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


@dataclass(frozen=True)
class Verdict:
    """What to do with an event after an attempt."""

    state: EventState
    next_attempt_at: datetime | None
    disable_endpoint: bool = False


def judge(
    attempts: int,
    status_code: int | None,
    retry_after: timedelta | None,
    now: datetime,
    jitter_sample: float,
) -> Verdict:
    """The verdict after attempt number ``attempts`` answered ``status_code`` (None: no answer).

    2xx delivers; 410 kills the event and disables the endpoint; anything else (3xx included,
    redirects are never followed) is a failure retried on the schedule, and on 429/503 not before
    the receiver's Retry-After.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Verdict(EventState.DELIVERED, None)
    if status_code == 410:
        return Verdict(EventState.DEAD, None, disable_endpoint=True)
    if attempts >= MAX_ATTEMPTS:
        return Verdict(EventState.DEAD, None)
    delay = next_delay(attempts, jitter_sample)
    if delay is None:
        return Verdict(EventState.DEAD, None)
    if status_code in (429, 503) and retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return Verdict(EventState.PENDING, now + delay)
