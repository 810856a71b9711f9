"""A cap on the size of RPC response bodies, enforced while the body is read.

A node (or whatever answers at its URL) can send a body of any size; without a cap one answer
could exhaust the worker's memory. Every transport reads bodies through :func:`read_capped`,
which refuses a declared ``Content-Length`` over the cap before reading anything and stops
reading as soon as the bytes received pass it. Bodies are counted after content decoding, so
a small compressed body that inflates past the cap is refused too.

The cap is ``max_response_bytes`` in networks.yaml (:data:`DEFAULT_MAX_RESPONSE_BYTES` unless set).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from paywatch.chains import DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "CappedSession", "ResponseTooLarge", "read_capped"]
_CHUNK = 64 * 1024


class ResponseTooLarge(Exception):
    """A response body passed the cap; its text names the cap, never the URL."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than max_response_bytes ({limit} bytes); not read further")
        self.limit = limit


def read_capped(chunks: Iterable[bytes], limit: int, declared: str | None = None) -> bytes:
    """The bytes of ``chunks`` (a streamed body), or ResponseTooLarge once they pass ``limit``.

    ``declared`` is the response's ``Content-Length``: over ``limit``, nothing is read.
    """
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(limit)
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(limit)
    return bytes(body)


class CappedSession(requests.Session):
    """A ``requests`` session that streams every response and reads at most ``limit`` body bytes.

    The body is read before ``request`` returns, so callers use ``response.content`` as usual.
    """

    def __init__(self, limit: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        super().__init__()
        self.limit = limit

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["stream"] = True
        response = super().request(*args, **kwargs)
        try:
            body = read_capped(response.iter_content(_CHUNK), self.limit, response.headers.get("Content-Length"))
        finally:
            response.close()
        response._content = body
        return response
