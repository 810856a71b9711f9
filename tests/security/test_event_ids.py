"""Callback event ids reveal nothing about overall traffic: the API exposes only opaque ids.

The outbox keeps an internal integer key for ordering; the API shows and accepts only the random
``webhook-id`` (``msg_`` + 96 random bits), so a merchant cannot count other stores' events by
watching its own ids grow, nor address events by guessing counters.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from tests.support.api_helpers import Api, add_store, make_api
from tests.support.callback_receiver import events_of

pytestmark = pytest.mark.attack("abuse")
OPAQUE = re.compile(r"^msg_[0-9a-f]{24}$")


def _invoice(api: Api, key: str | None = None) -> str:
    created = api.client.post(
        "/v1/invoices", json={"network": "ethereum", "asset": "USDT", "amount": "5"}, headers=api.headers(key)
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_event_ids_in_the_api_are_opaque(engine: Engine, app_config: AppConfig) -> None:
    api = make_api(engine, app_config)
    other = add_store(api, "other")
    _invoice(api, other)
    mine = _invoice(api)
    _invoice(api, other)
    listed = api.client.get(f"/v1/invoices/{mine}/callbacks", headers=api.headers())
    assert listed.status_code == 200
    (event,) = listed.json()["data"]
    assert OPAQUE.match(str(event["id"])) and event["id"] == event["webhook_id"], event
    redelivered = api.client.post(f"/v1/callbacks/{event['id']}/redeliver", headers=api.headers())
    assert redelivered.status_code == 202 and redelivered.json()["id"] == event["id"]


@pytest.mark.parametrize("guess", ["1", "2", "3", "0002"])
def test_counter_ids_are_not_addressable(engine: Engine, app_config: AppConfig, guess: str) -> None:
    api = make_api(engine, app_config)
    for _ in range(3):
        _invoice(api)
    assert len(events_of(engine)) == 3
    response = api.client.post(f"/v1/callbacks/{guess}/redeliver", headers=api.headers())
    assert response.status_code == 404, response.text
    assert response.json()["error"]["field"] == "delivery_id"
