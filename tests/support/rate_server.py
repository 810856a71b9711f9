"""A real local HTTP server that answers like the public price APIs, from recorded response shapes.

Each path gets a scripted reply (status + body); unknown paths get 404. ``set`` changes replies
while the server runs, so a test can take a source down or make it answer garbage.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rates"


def recorded(name: str) -> bytes:
    """The bytes of a recorded response in tests/fixtures/rates/."""
    return (FIXTURES / name).read_bytes()


@dataclass
class RateServer:
    """Scripted replies keyed by ``path?query`` or bare path; counts the requests it served."""

    replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    url: str = ""
    #: when set, every reply waits for ``gate`` after signalling ``arrived`` (a slow upstream, event-driven)
    gate: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)

    def set(self, key: str, status: int, body: bytes) -> None:
        self.replies[key] = (status, body)


@contextmanager
def rate_server() -> Iterator[RateServer]:
    """Serve a ``RateServer`` on 127.0.0.1 on a free port for the duration of the block."""
    state = RateServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            if state.gate is not None:
                state.arrived.set()
                state.gate.wait(30)
            path = self.path.split("?", 1)[0]
            status, body = state.replies.get(self.path) or state.replies.get(path) or (404, b"{}")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
