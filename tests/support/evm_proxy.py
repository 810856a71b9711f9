"""A small JSON-RPC proxy in front of anvil that misbehaves like real providers, on demand.

* ``log_limit``: refuse ``eth_getLogs`` over more blocks than this with -32005
  "query returned more than 10000 results" (Infura's answer).
* ``fail_requests``: answer the next N HTTP requests with 503.
* ``missing_blocks``: answer ``eth_getBlockByNumber`` for these numbers with ``null`` (a lagging node).
* ``refused_methods``: answer these methods with ``refused_code`` (-32601 "method not found" by
  default; some providers use -32000) and "... does not exist/is not available".
* ``rewrite``: ``rewrite(method, params, answer)`` returns the answer sent instead of anvil's
  (a hostile node fabricating shapes).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class RpcProxy:
    """Forwards JSON-RPC (single and batch) from a free 127.0.0.1 port to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.log_limit: int | None = None
        self.fail_requests = 0
        self.missing_blocks: set[int] = set()
        self.refused_methods: set[str] = set()
        self.refused_code = -32601
        self.refused_logs = 0
        self.log_queries: list[tuple[int, int]] = []
        self.requests = 0
        self.rewrite: Callable[[str, list[Any], Any], Any] | None = None
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, payload = proxy.handle(json.loads(body))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RpcProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()

    def handle(self, request: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests += 1
            if self.fail_requests > 0:
                self.fail_requests -= 1
                return 503, {"error": "service unavailable"}
        if isinstance(request, list):
            return 200, [self._one(item) for item in request]
        return 200, self._one(request)

    def _one(self, item: dict[str, Any]) -> Any:
        method, params = item.get("method"), item.get("params") or []
        if method in self.refused_methods:
            error = {"code": self.refused_code, "message": f"the method {method} does not exist/is not available"}
            return {"jsonrpc": "2.0", "id": item.get("id"), "error": error}
        if method == "eth_getLogs":
            lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
            with self._lock:
                self.log_queries.append((lo, hi))
                if self.log_limit is not None and hi - lo + 1 > self.log_limit:
                    self.refused_logs += 1
                    error = {"code": -32005, "message": "query returned more than 10000 results"}
                    return {"jsonrpc": "2.0", "id": item.get("id"), "error": error}
        block = str(params[0]) if method == "eth_getBlockByNumber" else ""
        if block.startswith("0x") and int(block, 16) in self.missing_blocks:
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": None}
        answer = self._client.post(self.upstream, json=item).json()
        rewrite = self.rewrite
        return answer if rewrite is None else rewrite(str(method), list(params), answer)
