"""JSON-RPC transport for Bitcoin Core compatible nodes (Bitcoin, Litecoin, Dogecoin).

Used as the provider of the shared :class:`paywatch.chains.evm_rpc.RpcClient` (retries, backoff,
failover, round-trip counting). What differs from an EVM provider:

* amounts are exact: the body is parsed with ``json.loads(parse_float=Decimal)``, so ``0.1``
  stays ``Decimal("0.1")`` and never becomes a float;
* credentials come from the URL (``http://user:password@host:port``, usually ``${VAR}``s) or from
  the node's cookie file, re-read when the node answers 401 (the cookie changes at every restart);
* response bodies are streamed and refused past ``max_response_bytes`` (the default session);
* the node answers a failed single call with HTTP 500 and a JSON-RPC error body, which is passed
  on as an error answer, not as a transport failure.

Credentials never appear in errors: :func:`redact` strips them from every URL the client shows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from paywatch.chains.body_limit import DEFAULT_MAX_RESPONSE_BYTES, CappedSession

_ids = itertools.count(1)


def redact(url: str) -> str:
    """``url`` without user name and password (for messages, logs and metric labels)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def loads(body: bytes | str) -> Any:
    """JSON with every number that has a fraction or exponent as an exact Decimal."""
    return json.loads(body, parse_float=Decimal)


class BitcoinRpcProvider:
    """One node URL; POSTs JSON-RPC 1.0 requests and batches with HTTP basic auth."""

    def __init__(
        self,
        url: str,
        *,
        cookie_file: str | None = None,
        timeout: float = 15.0,
        session: requests.Session | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(url)
        self._url = redact(url)
        self._auth: tuple[str, str] | None = None
        if parts.username is not None:
            self._auth = (unquote(parts.username), unquote(parts.password or ""))
        self._cookie_file = cookie_file
        self._timeout = timeout
        self._session = session or CappedSession(max_response_bytes)

    def _cookie(self) -> tuple[str, str] | None:
        if self._cookie_file is None:
            return None
        try:
            user, _, password = Path(self._cookie_file).read_text(encoding="utf-8").strip().partition(":")
        except OSError as exc:
            raise requests.ConnectionError(f"cannot read the RPC cookie file: {exc.strerror}") from None
        return user, password

    def _post(self, payload: Any) -> Any:
        auth = self._auth or self._cookie()
        data = json.dumps(payload, default=str)
        headers = {"Content-Type": "application/json"}
        response = self._session.post(self._url, data=data, headers=headers, auth=auth, timeout=self._timeout)
        if response.status_code == 401 and self._auth is None and self._cookie_file is not None:
            # the node restarted and wrote a new cookie: read it again once
            response = self._session.post(
                self._url, data=data, headers=headers, auth=self._cookie(), timeout=self._timeout
            )
        if response.status_code in (401, 403):
            raise requests.HTTPError(
                f"HTTP {response.status_code}: the node refused the RPC credentials", response=response
            )
        if response.status_code >= 400 and not response.content.lstrip().startswith((b"{", b"[")):
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
        return loads(response.content)

    def make_request(self, method: str, params: Any) -> Any:
        return self._post({"jsonrpc": "1.0", "id": next(_ids), "method": method, "params": list(params)})

    def make_batch_request(self, calls: Sequence[tuple[str, Any]]) -> Any:
        first = next(_ids)
        payload = [
            {"jsonrpc": "1.0", "id": first + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        for _ in calls[1:]:
            next(_ids)
        answer = self._post(payload)
        if isinstance(answer, list):
            answer.sort(key=lambda item: item.get("id", 0) if isinstance(item, dict) else 0)
        return answer
