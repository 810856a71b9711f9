"""A pure ASGI middleware: bodies above a byte limit get 413; every body is read as JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TOO_LARGE = json.dumps(
    {"error": {"code": "too_large", "message": "request body is too large", "field": None}}
).encode()


class BodyLimit:
    """Reject bodies larger than ``max_bytes`` before the application reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if b"json" not in headers.get(b"content-type", b"") and scope.get("method") in ("POST", "PUT", "PATCH"):
            # The API speaks only JSON; clients that omit the header or send curl's form default still mean JSON.
            kept = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _reject(send)
            return
        received = 0
        rejected = False

        async def limited() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reject(send)


class _TooLarge(Exception):
    pass


async def _reject(send: Send) -> None:
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_TOO_LARGE)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": _TOO_LARGE})
