"""The HTTP transport of the Tron adapter: request budget, backoff, Retry-After and failover.

Every request of a network goes through one :class:`TronHttp`, whether tronpy builds it
(through :class:`TronpyProvider`) or the adapter calls an endpoint tronpy lacks. So the budget
(``requests_per_second``) and the failover order over ``rpc_urls`` hold for all of them.

What happens to a failed request::

    transport error, timeout, 5xx, garbage body,
    a body past max_response_bytes (streamed),
    a java-tron {"Error": ...} answer            -> next URL; backoff once every URL failed this round
    429 / 403 (rate limited, TronGrid key limits) -> wait Retry-After (or backoff), then next URL
    other 4xx                                     -> next URL; ChainError if no URL accepts the call
    attempts exhausted                            -> RetryableChainError (nothing was changed)

After a failover the next URL stays in use; the first one is tried again ``back_to_primary``
seconds later.

Headers belong to an endpoint: each URL gets its own (``endpoint_headers``), and a network-wide
TronGrid key only goes to TronGrid hosts. The HTTP client ignores ``*_PROXY`` environment
variables; it uses ``proxy`` when given. Errors name endpoints only as
:func:`paywatch.redact.render_endpoint` renders them.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
from tronpy.providers.http import HTTPProvider

from paywatch.chains.body_limit import DEFAULT_MAX_RESPONSE_BYTES, ResponseTooLarge, read_capped
from paywatch.chains.tron_wire import node_error
from paywatch.config import TRONGRID_KEY_HEADER, is_trongrid
from paywatch.errors import ChainError, RetryableChainError
from paywatch.metrics import count_rpc
from paywatch.redact import describe, register_secrets, render_endpoint, scrub

API_KEY_HEADER = TRONGRID_KEY_HEADER
_RATE_LIMITED = frozenset({403, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request is tried before the caller sees RetryableChainError."""

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    timeout: float = 15.0
    back_to_primary: float = 300.0
    """Seconds after a failover before the first URL is tried again."""

    def delay(self, failures: int) -> float:
        """Exponential backoff for the ``failures``-th consecutive failure (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1)))


class RateBudget:
    """At most ``rate`` request starts per second, spaced evenly; shared by every caller of one network."""

    def __init__(self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until the next request may start."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)

    def defer(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` (a server asked us to, with Retry-After)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


class _Failure(Exception):
    def __init__(self, message: str, *, permanent: bool = False, wait: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.wait = wait


def api_url(base: str, path: str) -> str:
    """``path`` under ``base``, keeping the base's query (``https://h/KEY/?apikey=Q`` +
    ``wallet/x`` -> ``https://h/KEY/wallet/x?apikey=Q``)."""
    parts = urlsplit(base)
    joined = f"{parts.path.rstrip('/')}/{path.lstrip('/')}"
    return urlunsplit((parts.scheme, parts.netloc, joined, parts.query, parts.fragment))


class TronHttp:
    """POSTs JSON bodies to a java-tron HTTP API over ``urls`` (failover in order)."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        api_key: str | None = None,
        endpoint_headers: tuple[dict[str, str], ...] | None = None,
        proxy: str | None = None,
        requests_per_second: float = 10.0,
        client: httpx.Client | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        network: str = "",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL is needed")
        self.network = network
        self.max_response_bytes = max_response_bytes
        self.urls = tuple(u.rstrip("/") for u in urls)
        if endpoint_headers is not None and len(endpoint_headers) != len(self.urls):
            raise ValueError("endpoint_headers: one mapping per URL")
        register_secrets([api_key], urls=[*urls, *([proxy] if proxy else [])])
        self._configured = tuple(urls)  # as configured: what metrics labels and messages render
        self.endpoints = tuple(render_endpoint(u) for u in self._configured)
        self.policy = policy or RetryPolicy()
        self.budget = RateBudget(requests_per_second, clock=clock, sleep=sleep)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=self.policy.timeout, trust_env=False, proxy=proxy)
        self._headers: list[dict[str, str]] = []
        for index, url in enumerate(self.urls):
            own = dict(endpoint_headers[index]) if endpoint_headers else {}
            if api_key and API_KEY_HEADER not in own and is_trongrid(url):
                own[API_KEY_HEADER] = api_key
            register_secrets(own.values())
            self._headers.append({"Accept": "application/json", **own})
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._clock = clock
        self._current = 0
        self._failed_over_at = 0.0
        self.calls = 0
        """HTTP requests sent, failed ones included (for benchmarks and tests)."""

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def post(
        self, path: str, body: dict[str, Any] | None = None, *, decoder: msgspec.json.Decoder[Any] | None = None
    ) -> Any:
        """The decoded JSON answer of ``POST {url}/{path}``; raises ChainError/RetryableChainError.

        ``decoder``: decodes the body into typed structs (:mod:`paywatch.chains.tron_wire`) instead of
        plain JSON; an answer that is JSON but not of its shape raises ValueError naming the field
        (not retried: the node answered, wrongly). Default: the standard ``json`` module."""
        errors: list[str] = []
        permanent_urls: set[int] = set()
        failures = 0
        tried_this_round = 0
        if self._current and self._clock() - self._failed_over_at >= self.policy.back_to_primary:
            self._current = 0
        for _ in range(self.policy.attempts):
            index = self._current
            url = api_url(self.urls[index], path)
            try:
                answer = self._once(url, body or {}, self._headers[index], decoder)
            except _Failure as failure:
                count_rpc(self.network, self._configured[index], failed=True)
                failures += 1
                errors.append(f"{self.endpoints[index]}: {failure}")
                if failure.permanent:
                    permanent_urls.add(index)
                    if len(permanent_urls) == len(self.urls):
                        refusals = "; ".join(errors[-len(self.urls) :])
                        raise ChainError(f"{path}: refused by every node: {refusals}") from None
                self._current = (index + 1) % len(self.urls)
                self._failed_over_at = self._clock()
                tried_this_round += 1
                if failure.wait is not None:
                    self.budget.defer(failure.wait)
                elif tried_this_round >= len(self.urls):
                    tried_this_round = 0
                    self._sleep(self.policy.delay(failures))
            else:
                count_rpc(self.network, self._configured[index], failed=False)
                return answer
        raise RetryableChainError(f"{path}: no node answered after {self.policy.attempts} attempts: {errors[-1]}")

    def _once(
        self, url: str, body: dict[str, Any], headers: dict[str, str], decoder: msgspec.json.Decoder[Any] | None
    ) -> Any:
        self.budget.acquire()
        self.calls += 1
        failure: _Failure | None = None
        content = b""
        try:
            with self._client.stream("POST", url, json=body, headers=headers) as response:
                content = read_capped(
                    response.iter_bytes(), self.max_response_bytes, response.headers.get("content-length")
                )
        except ResponseTooLarge as exc:
            failure = _Failure(str(exc))
        except httpx.HTTPError as exc:  # its text may hold the URL: scrubbed, and not chained
            failure = _Failure(describe(exc))
        if failure is not None:
            raise failure
        status = response.status_code
        if status in _RATE_LIMITED:
            wait = self._retry_after(response)
            if wait is None:
                wait = self.policy.backoff
            raise _Failure(f"HTTP {status} (rate limited)", wait=min(wait, self.policy.max_retry_after))
        if status >= 500:
            raise _Failure(f"HTTP {status}")
        if status >= 400:
            raise _Failure(f"HTTP {status}", permanent=True)
        shape: str | None = None
        try:
            answer = json.loads(content) if decoder is None else decoder.decode(content)
        except msgspec.ValidationError as exc:  # JSON, but not of the expected shape
            shape = str(exc)
        except (ValueError, msgspec.DecodeError):
            failure = _Failure(f"HTTP {status} with a body that is not JSON")
        if failure is not None:
            raise failure
        if shape is not None:
            error, message = node_error(_loads_or_none(content))
            if not error:
                raise ValueError(f"answer of another shape: {shape}")
        else:
            error, message = node_error(answer)
        if error:  # java-tron reports its exceptions with 200
            raise _Failure(f"node error: {scrub(str(message)[:200])}")
        return answer

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - self._wall_clock())


def _loads_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


class TronpyProvider(HTTPProvider):  # type: ignore[misc]  # tronpy is untyped
    """A tronpy provider that sends every tronpy call through a :class:`TronHttp`.

    tronpy's own provider uses ``requests``, reads the environment and rotates built-in public
    API keys; this one keeps tronpy's call shapes and answers but none of that.
    """

    def __init__(self, http: TronHttp) -> None:  # no super().__init__: it would read the environment
        self.http = http
        self.endpoint_uri = http.urls[0]
        self.use_api_key = False
        self.jw_token = None
        self.timeout = http.policy.timeout

    def make_request(self, method: str, params: Any = None) -> Any:
        return self.http.post(method, params or {})
