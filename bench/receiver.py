"""A fast callback receiver for bench/scale_callbacks.py: asyncio, HTTP/1.1 keep-alive, 200 to every POST.

Each POST's signature is checked (the secret comes from ``BENCH_WEBHOOK_SECRET``) and
``(webhook-id, data.id, data.status_version)`` is recorded in arrival order. ``GET /stats`` answers
the counts; ``GET /dump`` writes the records as JSON lines to ``--out`` and clears them.

    BENCH_WEBHOOK_SECRET=whsec_... python bench/receiver.py --out records.jsonl   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from paywatch.callbacks.signing import verify

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class State:
    """What the receiver saw."""

    def __init__(self, secret: str, out: Path) -> None:
        self.secret = secret
        self.out = out
        self.records: list[tuple[str, str, int, float]] = []
        self.bad = 0
        self.first: float | None = None
        self.last: float | None = None

    def deliver(self, headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        if not verify(self.secret, headers, body, datetime.now(UTC)):
            self.bad += 1
        data = json.loads(body)["data"]
        self.records.append((headers.get("webhook-id", ""), data["id"], int(data["status_version"]), now))
        self.first = self.first or now
        self.last = now

    def control(self, path: str) -> bytes:
        stats = {"received": len(self.records), "bad_signatures": self.bad, "first": self.first, "last": self.last}
        if path == "/dump":
            with self.out.open("w") as f:
                for record in self.records:
                    f.write(json.dumps(record) + "\n")
            self.records, self.bad, self.first, self.last = [], 0, None, None
        body = json.dumps(stats).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class Http(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            assert self.transport is not None
            if method == "POST":
                self.state.deliver(headers, body)
                self.transport.write(OK)
            else:
                self.transport.write(self.state.control(path))


async def serve(state: State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(state), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(State(os.environ["BENCH_WEBHOOK_SECRET"], args.out)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
