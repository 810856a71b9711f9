"""The JSON-RPC client against a scripted provider over real HTTP: classification, batches, failover."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from paywatch.chains.evm_rpc import QueryTooLarge, RpcClient, RpcError
from paywatch.errors import RetryableChainError

Handler = Callable[[Any], tuple[int, Any]]


@pytest.fixture
def server() -> Iterator[tuple[str, list[Any], list[Handler]]]:
    """A loopback HTTP server answering with the last handler pushed; records every request body."""
    seen: list[Any] = []
    handlers: list[Handler] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append(body)
            status, payload = handlers[-1](body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, handlers
    finally:
        httpd.shutdown()
        httpd.server_close()


def ok(item: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": item["id"], "result": result}


def err(item: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": item["id"], "error": {"code": code, "message": message}}


def test_rate_limit_on_a_plain_call_is_retried_with_backoff(server: tuple[str, list[Any], list[Handler]]) -> None:
    url, seen, handlers = server
    answers = iter([err, err, None])

    def handle(body: Any) -> tuple[int, Any]:
        make = next(answers)
        return 200, make(body, -32005, "limit exceeded") if make else ok(body, "0x10")

    handlers.append(handle)
    sleeps: list[float] = []
    client = RpcClient([url], sleep=sleeps.append, attempts=4)
    assert client.call("eth_blockNumber", []) == "0x10"
    assert len(seen) == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9


def test_size_refusal_on_a_splittable_call_is_not_retried(server: tuple[str, list[Any], list[Handler]]) -> None:
    url, seen, handlers = server
    handlers.append(lambda body: (200, err(body, -32602, "query returned more than 10000 results")))
    client = RpcClient([url], sleep=lambda _s: None)
    with pytest.raises(QueryTooLarge):
        client.call("eth_getLogs", [{}], splittable=True)
    assert len(seen) == 1


def test_permanent_errors_are_not_retried(server: tuple[str, list[Any], list[Handler]]) -> None:
    url, seen, handlers = server
    handlers.append(lambda body: (200, err(body, -32601, "the method eth_foo does not exist")))
    with pytest.raises(RpcError) as info:
        RpcClient([url], sleep=lambda _s: None).call("eth_foo", [])
    assert info.value.code == -32601 and len(seen) == 1


def test_oversized_batches_are_halved_and_answers_keep_their_order(
    server: tuple[str, list[Any], list[Handler]],
) -> None:
    url, seen, handlers = server

    def handle(body: Any) -> tuple[int, Any]:
        if isinstance(body, list) and len(body) > 10:
            return 200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}
        items = body if isinstance(body, list) else [body]
        answers = [ok(item, item["params"][0]) for item in reversed(items)]  # any order on the wire
        return 200, answers if isinstance(body, list) else answers[0]

    handlers.append(handle)
    client = RpcClient([url], sleep=lambda _s: None)
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(37)]
    assert client.batch(calls, chunk=50) == [hex(n) for n in range(37)]
    assert max(len(b) for b in seen if isinstance(b, list) and len(b) <= 10) <= 10


def test_every_url_down_raises_retryable_after_all_attempts(server: tuple[str, list[Any], list[Handler]]) -> None:
    url, seen, handlers = server
    handlers.append(lambda body: (502, {"error": "bad gateway"}))
    sleeps: list[float] = []
    client = RpcClient([url, "http://127.0.0.1:9"], sleep=sleeps.append, attempts=3)
    with pytest.raises(RetryableChainError, match="every RPC URL failed"):
        client.call("eth_blockNumber", [])
    assert len(seen) == 3 and len(sleeps) == 2 and client.round_trips == 6


def test_requests_are_spaced_to_the_configured_rate(server: tuple[str, list[Any], list[Handler]]) -> None:
    url, seen, handlers = server
    handlers.append(lambda body: (200, ok(body, "0x1")))
    clock = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    client = RpcClient([url], sleep=sleep, requests_per_second=4, monotonic=lambda: clock[0])
    for _ in range(3):
        client.call("eth_blockNumber", [])
    assert sleeps == [0.25, 0.25] and len(seen) == 3
