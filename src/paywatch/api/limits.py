"""A pure ASGI middleware: bodies above a byte limit get 413, nesting too deep to parse gets 422.

The body is read in full (it is small: ``max_bytes``) before the application sees it, so a chunked
body without a ``Content-Length`` is measured like a sized one and refused with the same 413. Every
body is treated as JSON, whatever its content type says.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: JSON nested deeper than this cannot be parsed safely (Python's decoder recurses); refused first
MAX_JSON_DEPTH = 64


def _error(code: str, message: str, field: str | None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()


_TOO_LARGE = _error("too_large", "request body is too large", None)


class BodyLimit:
    """Reject bodies larger than ``max_bytes`` (413) or nested deeper than ``MAX_JSON_DEPTH`` (422)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        # the store logo upload is the one body that is not JSON
        image = scope.get("path") == "/v1/store/logo" and headers.get(b"content-type", b"").startswith(b"image/")
        if (
            b"json" not in headers.get(b"content-type", b"")
            and not image
            and scope.get("method") in ("POST", "PUT", "PATCH")
        ):
            # The API speaks only JSON; clients that omit the header or send curl's form default still mean JSON.
            kept = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _reply(send, 413, _TOO_LARGE)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await _reply(send, 413, _TOO_LARGE)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        deep = None if image else too_deep(body, MAX_JSON_DEPTH)
        if deep is not None:
            field = deep or None
            where = f"{deep}: " if deep else ""
            message_text = f"{where}JSON is nested more than {MAX_JSON_DEPTH} levels deep"
            await _reply(send, 422, _error("invalid", message_text, field))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def too_deep(body: bytes, limit: int) -> str | None:
    """None when ``body``'s brackets nest at most ``limit`` deep; else the top-level key under which
    they go deeper ('' when not under a key). Strings are skipped, so brackets inside them do not count.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    depth = 0
    in_string = escaped = False
    start = 0
    last_top_string = ""
    for i, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
                if depth == 1:
                    last_top_string = body[start:i].decode("utf-8", errors="replace")
        elif byte == 0x22:
            in_string, start = True, i + 1
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return last_top_string
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return None


async def _reply(send: Send, status: int, body: bytes) -> None:
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
