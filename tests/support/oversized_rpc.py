"""A local RPC server whose every answer is a valid JSON body of ``size`` bytes.

The body echoes the JSON-RPC ``id`` and pads with whitespace, so a client without a size cap
reads it as an ordinary answer (``result`` 7; the java-tron form is a mapping). ``declared``
sends a ``Content-Length``; without it the body runs until the connection closes. ``sent``
counts the body bytes the client accepted before it hung up (``done`` is set then).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CHUNK = 64 * 1024


class OversizedRpc:
    """Serves oversized answers on a free 127.0.0.1 port until closed."""

    def __init__(self, size: int, *, declared: bool) -> None:
        self.size = size
        self.declared = declared
        self.sent = 0
        self.done = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.answer(self, raw)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OversizedRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        request_id = request.get("id") if isinstance(request, dict) else None
        head = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": 7})[:-1].encode()
        padding = self.size - len(head) - 1
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.declared:
            handler.send_header("Content-Length", str(self.size))
        handler.end_headers()
        try:
            handler.wfile.write(head)
            while padding > 0:
                piece = min(padding, _CHUNK)
                handler.wfile.write(b" " * piece)
                self.sent += piece
                padding -= piece
            handler.wfile.write(b"}")
        except OSError:  # the client hung up: what a cap should make it do
            pass
        finally:
            handler.close_connection = True
            self.done.set()
