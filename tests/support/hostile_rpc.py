"""A local RPC server that fails in one chosen way, and echoes the caller's secrets while doing so.

Modes (for JSON-RPC and java-tron HTTP clients alike)::

    http_401        401 with a body naming the path, query and credential headers received
    http_500        500, same body
    http_429        429 with Retry-After: 0, same body
    timeout         holds the request until the server stops (beyond any client timeout)
    rpc_error       200 with a JSON-RPC error object (EVM) or java-tron {"Error": ...} (Tron), echoing
    malformed_json  200 with a body that is not JSON, echoing

Every request is recorded (path and headers), so tests can also see who received which header.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("http_401", "http_500", "http_429", "timeout", "rpc_error", "malformed_json")
ECHOED_HEADERS = ("authorization", "x-token", "tron-pro-api-key", "proxy-authorization")


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileRpc


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        with owner.lock:
            owner.seen.append(Seen(self.command, self.path, headers))
        echo = "request " + self.path + " " + " ".join(f"{h}={headers[h]}" for h in ECHOED_HEADERS if h in headers)
        mode = owner.mode
        if mode == "timeout":
            owner.release.wait(30)
            return
        if mode in ("http_401", "http_500", "http_429"):
            status = int(mode.removeprefix("http_"))
            extra = {"Retry-After": "0"} if status == 429 else {}
            self._send(status, json.dumps({"error": echo}).encode(), extra)
            return
        if mode == "malformed_json":
            self._send(200, ("<html>not json: " + echo).encode(), {})
            return
        if self.path.startswith("/wallet") or "/wallet" in self.path:
            self._send(200, json.dumps({"Error": "class java.lang.Exception : " + echo}).encode(), {})
            return
        try:
            request = json.loads(raw)
        except ValueError:
            request = {}
        ids = [r.get("id") for r in request] if isinstance(request, list) else [request.get("id")]
        errors = [{"jsonrpc": "2.0", "id": i, "error": {"code": -32000, "message": echo}} for i in ids]
        body = errors if isinstance(request, list) else errors[0]
        self._send(200, json.dumps(body).encode(), {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class HostileRpc:
    """Serves ``mode`` on a free 127.0.0.1 port; ``port`` and ``seen`` for the test."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HostileRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class RecordingProxy:
    """An HTTP proxy stand-in that records every request reaching it and answers 502."""

    def __init__(self) -> None:
        self.hits: list[Seen] = []
        self._rpc = HostileRpc("http_500")
        self._rpc.seen = self.hits
        self.port = self._rpc.port
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingProxy:
        self._rpc.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._rpc.__exit__(*exc)
