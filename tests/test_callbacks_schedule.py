"""Pure parts: the retry schedule, the verdict table, Retry-After, and Standard Webhooks signing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paywatch.callbacks.schedule import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    EventState,
    judge,
    next_delay,
    parse_retry_after,
)
from paywatch.callbacks.signing import active_secrets, decode_secret, sign, verify, webhook_headers
from paywatch.store.models import Store
from paywatch.stores import new_webhook_secret

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


@pytest.mark.parametrize(
    ("failures", "nominal"),
    [(1, 5 * S), (2, 5 * M), (3, 30 * M), (4, 2 * H), (5, 5 * H), (6, 10 * H), (7, 14 * H), (8, 20 * H), (9, 24 * H)],
)
def test_schedule_steps_and_jitter_bounds(failures: int, nominal: timedelta) -> None:
    assert next_delay(failures, 0.5) == nominal
    assert next_delay(failures, 0.0) == nominal * 0.9
    assert nominal * 0.9 <= next_delay(failures, 0.999999) <= nominal * 1.1  # type: ignore[operator]


def test_schedule_ends() -> None:
    assert next_delay(0, 0.5) is None and next_delay(len(RETRY_DELAYS) + 1, 0.5) is None
    assert MAX_ATTEMPTS == 10
    total = sum(RETRY_DELAYS, timedelta())
    assert timedelta(days=3) < total < timedelta(days=4)


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "state", "delay", "disable"),
    [
        (1, 200, None, EventState.DELIVERED, None, False),
        (1, 204, None, EventState.DELIVERED, None, False),
        (3, 299, None, EventState.DELIVERED, None, False),
        (1, 301, None, EventState.PENDING, 5 * S, False),
        (1, 302, None, EventState.PENDING, 5 * S, False),
        (1, 400, None, EventState.PENDING, 5 * S, False),
        (2, 500, None, EventState.PENDING, 5 * M, False),
        (1, None, None, EventState.PENDING, 5 * S, False),  # timeout / connection error
        (1, 410, None, EventState.DEAD, None, True),
        (1, 429, 120 * S, EventState.PENDING, 120 * S, False),
        (2, 503, 20 * M, EventState.PENDING, 20 * M, False),  # longer than the 5 min step
        (4, 503, 10 * S, EventState.PENDING, 2 * H, False),  # never sooner than the schedule
        (1, 429, 0 * S, EventState.PENDING, 5 * S, False),
        (1, 503, 9 * 24 * H, EventState.PENDING, 24 * H, False),  # capped
        (1, 500, 60 * S, EventState.PENDING, 5 * S, False),  # Retry-After only on 429/503
        (1, 429, None, EventState.PENDING, 5 * S, False),
        (9, 500, None, EventState.PENDING, 24 * H, False),
        (10, 500, None, EventState.DEAD, None, False),
        (10, 429, 5 * S, EventState.DEAD, None, False),  # Retry-After does not extend the end
        (11, 500, None, EventState.DEAD, None, False),  # a redelivered dead event dies again
        (10, 200, None, EventState.DELIVERED, None, False),
    ],
)
def test_verdicts(
    attempt: int,
    status: int | None,
    retry_after: timedelta | None,
    state: EventState,
    delay: timedelta | None,
    disable: bool,
) -> None:
    verdict = judge(attempt, status, retry_after, NOW, 0.5)
    assert verdict.state is state
    assert verdict.next_attempt_at == (NOW + delay if delay is not None else None)
    assert verdict.disable_endpoint is disable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120 * S),
        (" 7 ", 7 * S),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 2 * M),
        ("Sun, 01 Mar 2026 11:00:00 GMT", timedelta(0)),  # in the past: now
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(header: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = new_webhook_secret()
    body = '{"type":"invoice.completed","data":{"id":"inv_1","note":"ünïcode"}}'.encode()
    headers = webhook_headers([secret], "msg_1", int(datetime.now(UTC).timestamp()), body)
    assert Webhook(secret).verify(body, headers)["data"]["id"] == "inv_1"
    tampered = body.replace(b"inv_1", b"inv_2")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


def test_signature_matches_the_reference_vector() -> None:
    # The Standard Webhooks reference example (standard-webhooks/spec, libraries' tests)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, stamp = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    assert sign(decode_secret(secret), msg_id, stamp, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_active_secrets_follow_the_grace_period() -> None:
    store = Store(id="st_1", name="s", api_key_hash="h", webhook_secret="whsec_bmV3", created_at=NOW)
    assert active_secrets(store, NOW) == ["whsec_bmV3"]
    store.webhook_secret_previous = "whsec_b2xk"
    store.webhook_secret_previous_until = NOW + H
    assert active_secrets(store, NOW) == ["whsec_bmV3", "whsec_b2xk"]
    assert active_secrets(store, NOW + H) == ["whsec_bmV3"]
    headers = webhook_headers(active_secrets(store, NOW), "msg_x", 1, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2


@pytest.mark.parametrize("bad", ["secret", "whsec_", "whsec_***"])
def test_bad_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_secret(bad)


def test_receiver_side_verify_agrees_with_standardwebhooks() -> None:
    secret, other = new_webhook_secret(), new_webhook_secret()
    body = b'{"type":"invoice.completed"}'
    now = datetime.now(UTC).replace(microsecond=0)
    reference = Webhook(secret).sign("msg_9", now, body.decode())
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": reference}
    assert verify(secret, headers, body, now)
    assert verify(secret, {**headers, "webhook-signature": f"v1,AAAA {reference}"}, body, now)  # any one matches
    assert not verify(other, headers, body, now)
    assert not verify(secret, headers, body + b" ", now)
    assert not verify(secret, {**headers, "webhook-id": "msg_8"}, body, now)
    assert not verify(secret, headers, body, now + timedelta(minutes=6))  # replay outside the tolerance
    assert not verify(secret, {k: v for k, v in headers.items() if k != "webhook-timestamp"}, body, now)
