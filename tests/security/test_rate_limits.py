"""Per-store token buckets on invoice creation and redelivery: 429 with Retry-After, then refilled.

Time is the API's injected clock; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from tests.support.api_helpers import Api, add_store, make_api
from tests.support.callback_receiver import events_of

pytestmark = pytest.mark.attack("abuse")


def _limited(app_config: AppConfig) -> AppConfig:
    settings = app_config.settings.model_copy(
        update={
            "invoice_rate_per_minute": 6.0,  # one token every 10 s
            "invoice_burst": 3,
            "redeliver_rate_per_minute": 2.0,  # one token every 30 s
            "redeliver_burst": 2,
        }
    )
    return AppConfig(settings=settings, networks=app_config.networks)


def _create(api: Api, key: str | None = None) -> Any:
    return api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "5"}, headers=api.headers(key)
    )


@pytest.mark.parametrize("burst_try", [4, 10])
def test_invoice_creation_beyond_the_burst_gets_429_with_retry_after(
    engine: Engine, app_config: AppConfig, burst_try: int
) -> None:
    api = make_api(engine, _limited(app_config))
    codes = [_create(api).status_code for _ in range(burst_try)]
    assert codes[:3] == [201, 201, 201] and set(codes[3:]) == {429}
    refused = _create(api)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "invoice" in error["message"]
    other = add_store(api, "other")
    assert _create(api, other).status_code == 201  # buckets are per store
    api.clock.advance(seconds=9)
    assert _create(api).status_code == 429
    api.clock.advance(seconds=1)
    assert _create(api).status_code == 201
    assert _create(api).status_code == 429


def test_redelivery_beyond_the_burst_gets_429(engine: Engine, app_config: AppConfig) -> None:
    api = make_api(engine, _limited(app_config))
    assert _create(api).status_code == 201
    (event,) = events_of(engine)
    url = f"/v1/callbacks/{event.webhook_id}/redeliver"
    assert [api.client.post(url, headers=api.headers()).status_code for _ in range(3)] == [202, 202, 429]
    refused = api.client.post(url, headers=api.headers())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
    api.clock.advance(seconds=30)
    assert api.client.post(url, headers=api.headers()).status_code == 202


def test_unauthenticated_floods_do_not_drain_a_store_bucket(engine: Engine, app_config: AppConfig) -> None:
    api = make_api(engine, _limited(app_config))
    for _ in range(10):
        assert _create(api, "pw_wrong").status_code == 401
    assert _create(api).status_code == 201
