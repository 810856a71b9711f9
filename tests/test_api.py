"""The merchant API through the real app and database."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from paywatch.config import AppConfig
from paywatch.domain.matching import Match
from paywatch.domain.transfer import Transfer
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent, NetworkState
from tests.conftest import USDT_ETH, USDT_TRON
from tests.support.api_helpers import Api, add_store, make_api
from tests.support.chain_clock import scanned_until


@pytest.fixture
def api(engine: Engine, app_config: AppConfig) -> Api:
    return make_api(engine, app_config)


def create(api: Api, **body: Any) -> Any:
    payload = {"network": "ethereum", "asset": "USDT", "amount": "25.5", **body}
    return api.client.post("/v1/invoices", json=payload, headers=api.headers())


def test_create_get_and_expire_like_a_new_user(api: Api, app_config: AppConfig) -> None:
    response = create(api, expires_in="00:01")
    assert response.status_code == 201, response.text
    invoice = response.json()
    # index 1 of the "abandon ... about" account (index 0 is kept for the shared address)
    assert invoice["address"] == "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0"
    assert invoice["amount"] == "25.5" and invoice["status"] == "PENDING"
    assert invoice["payment_uri"] == (
        f"ethereum:{USDT_ETH}@1/transfer?address=0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0&uint256=25500000"
    )
    got = api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers()).json()
    assert got == invoice
    api.clock.advance(seconds=61)
    scanned_until(api.engine, "ethereum", api.clock())  # expiry is judged by scanned block time
    with session_scope(api.engine) as session:
        assert Ledger(app_config.networks).expiry_sweep(session, api.clock()) == 1
    after = api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers()).json()
    assert after["status"] == "EXPIRED"
    assert [h["status"] for h in after["history"]] == ["PENDING", "EXPIRED"]
    assert after["status_version"] == 2


def test_auth_by_header_or_bearer_and_store_isolation(api: Api) -> None:
    invoice_id = create(api).json()["id"]
    assert (
        api.client.get(f"/v1/invoices/{invoice_id}", headers={"Authorization": f"Bearer {api.key}"}).status_code == 200
    )
    missing = api.client.get(f"/v1/invoices/{invoice_id}")
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "X-Api-Key"
    assert api.client.get(f"/v1/invoices/{invoice_id}", headers={"X-Api-Key": "pw_wrong"}).status_code == 401
    other = add_store(api, "other")
    hidden = api.client.get(f"/v1/invoices/{invoice_id}", headers={"X-Api-Key": other})
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    assert api.client.post(f"/v1/invoices/{invoice_id}/cancel", headers={"X-Api-Key": other}).status_code == 404
    assert api.client.get("/v1/invoices", headers={"X-Api-Key": other}).json()["data"] == []


def test_list_paginates_newest_first_and_filters_by_status(api: Api) -> None:
    ids = []
    for _ in range(5):
        ids.append(create(api).json()["id"])
        api.clock.advance(seconds=1)
    api.client.post(f"/v1/invoices/{ids[0]}/cancel", headers=api.headers())
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/invoices", params=params, headers=api.headers()).json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = api.client.get("/v1/invoices", params={"status": "CANCELLED"}, headers=api.headers()).json()
    assert [row["id"] for row in cancelled["data"]] == [ids[0]]
    bad = api.client.get("/v1/invoices", params={"status": "NOPE"}, headers=api.headers())
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "status"


def test_cancel_and_mark_paid_are_terminal(api: Api) -> None:
    first, second = create(api).json()["id"], create(api).json()["id"]
    cancelled = api.client.post(f"/v1/invoices/{first}/cancel", headers=api.headers()).json()
    assert cancelled["status"] == "CANCELLED"
    again = api.client.post(f"/v1/invoices/{first}/mark-paid", headers=api.headers())
    assert again.status_code == 409 and again.json()["error"]["field"] == "status"
    paid = api.client.post(f"/v1/invoices/{second}/mark-paid", headers=api.headers()).json()
    assert paid["status"] == "COMPLETED" and paid["flags"] == ["marked_paid"]
    with session_scope(api.engine) as session:
        from sqlmodel import select

        types = [e.type for e in session.exec(select(CallbackEvent).where(CallbackEvent.invoice_id == second))]
    assert types == ["invoice.created", "invoice.completed"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "1.0000001"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": 25.5}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"network": "dogechain"}, "network"),
        ({"asset": "SHIB"}, "asset"),
        ({"expires_in": 5}, "expires_in"),
        ({"expires_in": 31 * 86400}, "expires_in"),
        ({"expires_in": "25:61"}, "expires_in"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"callback_url": "http://127.0.0.1/hook"}, "callback_url"),
        ({"callback_url": "http://10.1.2.3/hook"}, "callback_url"),
        ({"callback_url": "http://[::1]/hook"}, "callback_url"),
        ({"callback_url": "http://2130706433/hook"}, "callback_url"),
        ({"callback_url": "http://0177.0.0.1/hook"}, "callback_url"),
        ({"match": "guess"}, "match"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    response = create(api, **body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["message"] and error["code"]


def test_missing_fields_malformed_and_oversized_bodies(api: Api, app_config: AppConfig) -> None:
    missing = api.client.post("/v1/invoices", json={"network": "ethereum"}, headers=api.headers())
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "asset"
    malformed = api.client.post("/v1/invoices", content=b'{"network": ', headers=api.headers())
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"
    not_object = api.client.post("/v1/invoices", json=[1], headers=api.headers())
    assert not_object.status_code == 422
    huge = b'{"description": "' + b"x" * (app_config.settings.max_body_bytes + 1) + b'"}'
    too_large = api.client.post("/v1/invoices", content=huge, headers=api.headers())
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "too_large"


def test_expires_in_seconds_or_hh_mm(api: Api) -> None:
    assert create(api, expires_in=3600).json()["expires_at"] == "2026-01-01T13:00:00Z"
    assert create(api, expires_in="3600").json()["expires_at"] == "2026-01-01T13:00:00Z"
    assert create(api, expires_in="02:30").json()["expires_at"] == "2026-01-01T14:30:00Z"
    assert create(api).json()["expires_at"] == "2026-01-02T12:00:00Z"  # default 24 h


def test_payment_uris_and_strategies(api: Api) -> None:
    native = create(api, asset="ETH", amount="0.5").json()
    assert native["payment_uri"] == f"ethereum:{native['address']}@1?value=500000000000000000"
    trc20 = create(api, network="tron", asset="USDT", amount="25.5", match="memo").json()
    # the store's own shared memo address: index 1 (index 0 is the network-wide one, watched for old invoices)
    assert trc20["memo"] and trc20["address"] == "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK"
    assert trc20["payment_uri"] == f"tron:{trc20['address']}?amount=25.5&token={USDT_TRON}&memo={trc20['memo']}"
    trx = create(api, network="tron", asset="TRX", amount="10").json()
    assert trx["payment_uri"] == f"tron:{trx['address']}?amount=10"
    first = create(api, asset="USDT", amount="10", match="amount").json()
    second = create(api, asset="USDT", amount="10", match="amount").json()
    assert first["address"] == second["address"]
    assert {first["amount"], second["amount"]} == {"10.000001", "10.000002"}


def test_invoice_shows_payments_with_confirmations(api: Api, app_config: AppConfig) -> None:
    invoice = create(api, amount="25.5").json()
    from paywatch.domain.transfer import address_key

    transfer = Transfer(
        network="ethereum",
        tx_hash="0x" + "ab" * 32,
        log_index=3,
        block_number=100,
        block_hash="0x" + "cd" * 32,
        block_time=api.clock(),
        from_address="0x" + "11" * 20,
        to_address=invoice["address"],
        asset_key=address_key(USDT_ETH),
        amount=25_500_000,
    )
    with session_scope(api.engine) as session:
        session.add(NetworkState(network="ethereum", tip_height=101, cursor_height=101, last_scan_at=api.clock()))
        Ledger(app_config.networks).record_matches(session, [Match(transfer, invoice["id"])], api.clock())
    got = api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers()).json()
    assert got["status"] == "WAITING_FOR_CONFIRMATIONS"
    assert got["amount_paid"] == "25.5" and got["amount_pending"] == "25.5" and got["amount_due"] == "0"
    [payment] = got["payments"]
    assert payment["confirmations"] == 2 and payment["state"] == "seen" and payment["amount"] == "25.5"
    assert payment["explorer_url"] == f"https://etherscan.io/tx/{transfer.tx_hash}"


def test_stalled_network_refuses_new_invoices_with_503(api: Api) -> None:
    with session_scope(api.engine) as session:
        session.add(NetworkState(network="ethereum", tip_height=10, cursor_height=10, last_scan_at=api.clock()))
    assert create(api).status_code == 201
    api.clock.advance(hours=1)
    stalled = create(api)
    assert stalled.status_code == 503 and "ethereum" in stalled.json()["error"]["message"]
    health = api.client.get("/healthz").json()
    assert health["status"] == "degraded" and health["networks"]["ethereum"]["status"] == "stalled"


def test_openapi_is_served(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "/v1/invoices" in spec["paths"] and "/v1/invoices/{invoice_id}/mark-paid" in spec["paths"]


def test_network_far_behind_its_tip_refuses_new_invoices(api: Api) -> None:
    from paywatch.store.models import ScannedBlock

    old = api.clock() - timedelta(hours=2)
    with session_scope(api.engine) as session:
        session.add(ScannedBlock(network="ethereum", number=10, hash="0xa", parent_hash="0x9", timestamp=old))
        session.add(NetworkState(network="ethereum", tip_height=900, cursor_height=10, last_scan_at=api.clock()))
    lagging = create(api)
    assert lagging.status_code == 503 and "890 blocks behind" in lagging.json()["error"]["message"]
    assert api.client.get("/healthz").json()["networks"]["ethereum"]["lag_blocks"] == 890


def test_metrics_expose_lag_queue_and_transitions(api: Api) -> None:
    from paywatch.store.models import ScannedBlock

    with session_scope(api.engine) as session:
        session.add(ScannedBlock(network="ethereum", number=10, hash="0xa", parent_hash="0x9", timestamp=api.clock()))
        session.add(NetworkState(network="ethereum", tip_height=12, cursor_height=10, last_scan_at=api.clock()))
    invoice_id = create(api).json()["id"]
    api.client.post(f"/v1/invoices/{invoice_id}/mark-paid", headers=api.headers())
    api.clock.advance(seconds=30)
    text = api.client.get("/metrics").text
    assert 'paywatch_head_lag_blocks{network="ethereum"} 2.0' in text
    assert 'paywatch_head_lag_seconds{network="ethereum"} 30.0' in text
    assert 'paywatch_callback_queue_depth{state="pending"} 2.0' in text
    for name in (
        "paywatch_blocks_scanned",
        "paywatch_transfers",
        "paywatch_rpc_calls",
        "paywatch_rpc_errors",
        "paywatch_callback_deliveries",
        "paywatch_status_transitions",
    ):
        assert f"# TYPE {name}" in text, name


def test_creation_answer_and_its_checks_in_order(api: Api) -> None:
    """POST /v1/invoices answers from one worker-thread hop: the key is checked first (missing, then
    unknown: 401 even with a bad body), then the JSON (400), then the fields (422); the answer is
    the invoice as GET shows it and as its ``invoice.created`` event carries it, rendered as FastAPI
    renders a returned dict (compact, UTF-8, floats as Python writes them)."""
    bad_body = {"network": "ethereum", "amount": 5}
    assert api.client.post("/v1/invoices", json=bad_body).status_code == 401
    assert api.client.post("/v1/invoices", json=bad_body, headers={"X-Api-Key": "pw_wrong"}).status_code == 401
    broken = api.client.post("/v1/invoices", content=b"{", headers=api.headers())
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "malformed_json"
    invalid = api.client.post("/v1/invoices", json=bad_body, headers=api.headers())
    assert invalid.status_code == 422 and invalid.json()["error"]["field"] in ("asset", "amount")
    metadata = {"note": "café ✓ \u2028", "ratio": 1e20, "small": 0.1, "items": [1, {"a": None}]}
    response = api.client.post(
        "/v1/invoices",
        json={"network": "ethereum", "asset": "USDT", "amount": "1", "metadata": metadata},
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["metadata"] == metadata
    rendered = json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    assert response.content == rendered and response.headers["content-type"] == "application/json"
    assert api.client.get(f"/v1/invoices/{answer['id']}", headers=api.headers()).json() == answer
    with session_scope(api.engine) as session:
        event = session.exec(select(CallbackEvent).where(CallbackEvent.invoice_id == answer["id"])).one()
    assert event.type == "invoice.created" and json.loads(event.body)["data"] == answer
