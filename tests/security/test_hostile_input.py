"""Hostile input: every malformed form gets a clear 4xx naming the field, never a 500.

Metadata is checked for depth, total size, string validity (no lone surrogates, no NUL) and finite
numbers; the other free-text fields for lone surrogates; oversized chunked bodies get 413 like sized
ones. Callback bodies are strict JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig
from paywatch.errors import InputError
from paywatch.invoices import InvoiceRequest, create_invoice
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, Store
from tests.support.api_helpers import Api, make_api
from tests.support.core_db import _module_database, shared_db_url  # noqa: F401  (per-module database, emptied per test)

pytestmark = pytest.mark.attack("hostile_input")


@pytest.fixture
def api(engine: Engine, app_config: AppConfig) -> Api:
    return make_api(engine, app_config)


def _post_raw(api: Api, raw: str) -> Any:
    return api.client.post(
        "/v1/invoices", content=raw.encode("utf-8"), headers={**api.headers(), "content-type": "application/json"}
    )


def _body(metadata_json: str) -> str:
    return '{"network": "ethereum", "asset": "USDT", "amount": "25.5", "metadata": ' + metadata_json + "}"


def _nested(levels: int, kind: str) -> str:
    if kind == "dict":
        return '{"a": ' * levels + "1" + "}" * levels
    return '{"a": ' + "[" * levels + "1" + "]" * levels + "}"


METADATA_FORMS = {
    "dict nested 256 levels": _nested(256, "dict"),
    "dict nested 1000 levels": _nested(1000, "dict"),
    "list nested 300 levels": _nested(300, "list"),
    "list nested 20000 levels": _nested(20000, "list"),
    "dict nested 33 levels": _nested(33, "dict"),
    "lone high surrogate value": '{"note": "\\ud800"}',
    "lone low surrogate value": '{"note": "\\udfff"}',
    "lone surrogate in a key": '{"\\ud83d": "x"}',
    "lone surrogate deep in a list": '{"a": [["ok", "\\udc00"]]}',
    "NUL in a value": '{"note": "a\\u0000b"}',
    "NUL in a key": '{"a\\u0000": 1}',
    "NaN": '{"x": NaN}',
    "Infinity": '{"x": Infinity}',
    "-Infinity": '{"x": -Infinity}',
    "1e400 overflows to infinity": '{"x": 1e400}',
    "NaN in a list": '{"x": [1, NaN]}',
    "integer beyond 64 bits": '{"x": ' + "9" * 40 + "}",
    "oversized metadata": '{"blob": "' + "x" * 40_000 + '"}',
    "many small keys": "{" + ", ".join(f'"k{i}": {i}' for i in range(4000)) + "}",
    "not an object": "[1, 2]",
}


@pytest.mark.parametrize("raw", list(METADATA_FORMS.values()), ids=list(METADATA_FORMS))
def test_hostile_metadata_is_a_422_naming_metadata(api: Api, raw: str) -> None:
    response = _post_raw(api, _body(raw))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "metadata" and error["message"], error


TEXT_FIELDS = ["order_id", "description", "customer_email", "callback_url", "network", "asset", "amount"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_lone_surrogates_in_text_fields_are_a_422_naming_the_field(api: Api, field: str) -> None:
    body = {"network": "ethereum", "asset": "USDT", "amount": "25.5"}
    raw = json.dumps(body)[:-1] + f', "{field}": "x\\ud800y"}}'
    if field in body:
        raw = json.dumps({k: v for k, v in body.items() if k != field})[:-1] + f', "{field}": "x\\ud800y"}}'
    response = _post_raw(api, raw)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    "path",
    [
        "/v1/invoices/inv_%ED%A0%80",  # the UTF-8 bytes of a lone surrogate
        "/v1/invoices/inv_%FF%FE",  # not UTF-8 at all
        "/v1/invoices?status=%ED%A0%80",
        "/v1/invoices?cursor=%ED%A0%80",
        "/v1/invoices/inv_%00/callbacks",
    ],
)
def test_undecodable_path_and_query_bytes_are_4xx(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.headers())
    assert 400 <= response.status_code < 500, response.text


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    yield b'{"description": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_oversized_chunked_body_gets_413_like_a_sized_one(
    api: Api, app_config: AppConfig, content_type: str | None
) -> None:
    headers = api.headers() | ({"content-type": content_type} if content_type else {})
    response = api.client.post(
        "/v1/invoices", content=_chunks(app_config.settings.max_body_bytes + 1), headers=headers
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


def test_a_small_chunked_body_still_works(api: Api) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"network": "ethereum", "asset": "USDT",'
        yield b' "amount": "25.5", "metadata": {"a": [1, 2.5, "x"]}}'

    response = api.client.post("/v1/invoices", content=body(), headers=api.headers())
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_service_layer_refuses_non_finite_metadata_and_callback_bodies_are_strict_json(
    engine: Engine, app_config: AppConfig, value: float
) -> None:
    """Not only the API: the invoice service refuses it, and every stored callback body is strict JSON."""
    api = make_api(engine, app_config)
    with session_scope(engine) as session:
        store = session.get(Store, api.store_id)
        assert store is not None
        request = InvoiceRequest(
            network="ethereum", asset="USDT", amount="1", expires_in=3600, metadata={"x": value}
        )
        with pytest.raises(InputError) as caught:
            create_invoice(session, app_config, store, request, api.clock())
        assert caught.value.field == "metadata"
    ok = api.client.post(
        "/v1/invoices",
        json={"network": "ethereum", "asset": "USDT", "amount": "1", "metadata": {"x": 1.5, "y": "\u00e9\U0001f600"}},
        headers=api.headers(),
    )
    assert ok.status_code == 201, ok.text
    api.clock.advance(seconds=1)
    with session_scope(engine) as session:
        bodies = [e.body for e in session.exec(select(CallbackEvent))]
    assert bodies
    for body in bodies:
        json.loads(body, parse_constant=_refuse)  # NaN/Infinity would call parse_constant



def _refuse(token: str) -> float:
    raise AssertionError(f"non-standard JSON token {token} in a callback body")
