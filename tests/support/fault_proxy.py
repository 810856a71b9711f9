"""A JSON-RPC proxy in front of a node that fails a share of the calls, like a bad provider.

Of every 20 consecutive HTTP requests (one call or one batch), ``round(rate * 20)`` picked at random
are answered with a fault (so the share is ``rate`` exactly, not only on average), its kind picked
uniformly from ``kinds``:

* ``http_500``, ``http_502``, ``http_503``: an HTTP error status with a body (JSON, or nginx HTML);
* ``rpc_error``: a JSON-RPC error object (a single call's answer, or one item of a batch, the
  others being the node's real answers): "header not found", "internal error", rate limited;
* ``reset``: the TCP connection is reset (RST, no answer);
* ``slow``: the node's real answer, sent only after ``slow_delay`` seconds (set it beyond the
  client's timeout).

Other requests are forwarded, after ``latency`` seconds (a remote node's round trip). The
decisions come from a seeded RNG; ``rate``, ``latency`` and ``slow_delay`` may be changed while
the proxy runs. ``calls`` and ``faults`` count what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

DECK = 20
KINDS = ("http_500", "http_502", "http_503", "rpc_error", "reset", "slow")
RPC_ERRORS = (
    {"code": -32000, "message": "header not found"},
    {"code": -32603, "message": "internal error"},
    {"code": 429, "message": "Too Many Requests: request rate limited"},
)
NGINX_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # clients that time out and hang up are part of the game


class FaultProxy:
    """Forwards JSON-RPC from a free 127.0.0.1 port to ``upstream``, failing ``rate`` of the calls."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int = 0,
        latency: float = 0.0,
        slow_delay: float = 2.0,
        kinds: tuple[str, ...] = KINDS,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        self.upstream = upstream
        self.rate = rate
        self.latency = latency
        self.slow_delay = slow_delay
        self.kinds = kinds
        self.calls = 0
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._deck: list[bool] = []
        self._deck_rate = rate
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._client = httpx.Client(timeout=30)
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._client.close()

    @property
    def fault_count(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    def figures(self) -> dict[str, Any]:
        """Calls, faults and their share, by kind."""
        with self._lock:
            total = sum(self.faults.values())
            return {
                "calls": self.calls,
                "faults": total,
                "share": round(total / self.calls, 3) if self.calls else 0.0,
                "by_kind": dict(sorted(self.faults.items())),
            }

    def _decide(self) -> tuple[str | None, random.Random]:
        with self._lock:
            self.calls += 1
            if not self._deck or self._deck_rate != self.rate:
                faulty = round(self.rate * DECK)
                self._deck = [True] * faulty + [False] * (DECK - faulty)
                self._rng.shuffle(self._deck)
                self._deck_rate = self.rate
            fault = self._rng.choice(self.kinds) if self._deck.pop() else None
            if fault is not None:
                self.faults[fault] += 1
            return fault, random.Random(self._rng.getrandbits(32))

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        reply = self._client.post(self.upstream, content=body, headers={"content-type": "application/json"})
        return reply.status_code, reply.content

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fault, rng = proxy._decide()
                try:
                    if fault == "reset":
                        self._reset()
                        return
                    if fault in ("http_500", "http_502", "http_503"):
                        status = int(fault.removeprefix("http_"))
                        text = NGINX_502 if status == 502 else json.dumps({"error": "upstream unavailable"}).encode()
                        self._send(status, text, "text/html" if status == 502 else "application/json")
                        return
                    if fault == "rpc_error":
                        self._send(200, json.dumps(proxy._rpc_error(body, rng)).encode(), "application/json")
                        return
                    if fault == "slow":
                        if proxy._stopping.wait(proxy.slow_delay):
                            return
                    elif proxy.latency and proxy._stopping.wait(proxy.latency):
                        return
                    status, data = proxy._forward(body)
                    self._send(status, data, "application/json")
                except (OSError, httpx.HTTPError):
                    self.close_connection = True  # the client hung up (a slow answer) or the node is gone

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reset(self) -> None:
                """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                fd = self.connection.detach()
                with contextlib.suppress(OSError):
                    os.close(fd)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def _rpc_error(self, body: bytes, rng: random.Random) -> Any:
        """A JSON-RPC error for a single call; for a batch, the real answers with one item an error."""
        request = json.loads(body)
        error = rng.choice(RPC_ERRORS)
        if not isinstance(request, list):
            return {"jsonrpc": "2.0", "id": request.get("id"), "error": error}
        _status, data = self._forward(body)
        answers = json.loads(data)
        if isinstance(answers, list) and answers:
            victim = rng.randrange(len(answers))
            answers[victim] = {"jsonrpc": "2.0", "id": answers[victim].get("id"), "error": error}
        return answers
