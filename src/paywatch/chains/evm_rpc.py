"""JSON-RPC for EVM nodes: raw batches over web3's HTTPProvider, retries with backoff, failover.

Responses are the node's raw JSON (hex strings); web3's formatting layer is skipped on purpose:
it roughly doubles the cost of reading block bodies (see ``bench/evm_scan.py``).

Errors::

    ChainError
    ├── RpcError              the node answered a JSON-RPC error that retrying will not fix
    │   └── QueryTooLarge     the provider refused the size of a query (split it and ask again)
    └── RetryableChainError   transport failures, 429/5xx, rate limits; raised after every
                              URL and every attempt failed
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import requests
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from paywatch.chains.body_limit import DEFAULT_MAX_RESPONSE_BYTES, CappedSession
from paywatch.errors import ChainError, RetryableChainError
from paywatch.metrics import count_rpc
from paywatch.redact import describe, register_secrets, render_endpoint, scrub

#: Messages providers use when an ``eth_getLogs`` range or a response is too big.
_TOO_LARGE_HINTS = (
    "query returned more than",
    "block range",
    "range is too large",
    "too large",
    "too many blocks",
    "exceed",
    "response size",
    "limit exceeded",
    "query timeout",
    "log response size",
)
_TOO_LARGE_CODES = frozenset({-32005, -32614})
#: JSON-RPC codes that will not change on another node or a later try.
_PERMANENT_CODES = frozenset({-32600, -32601, -32602})


class RpcError(ChainError):
    """A JSON-RPC error answer; ``code`` and ``message`` are the node's."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


class QueryTooLarge(RpcError):
    """The provider refused a query because of its size (range, result count, time or bytes).

    ``timed_out``: the only sign was a timeout, which a passing fault of the node also gives.
    """

    def __init__(self, method: str, code: int, message: str, *, timed_out: bool = False) -> None:
        super().__init__(method, code, message)
        self.timed_out = timed_out


class JsonRpcProvider(Protocol):
    """What the client needs from a provider: one call and one batch, returning raw JSON."""

    def make_request(self, method: str, params: Any) -> Any:
        """POST one request; return the decoded JSON-RPC response object."""
        ...

    def make_batch_request(self, calls: Sequence[tuple[str, Any]]) -> Any:
        """POST a batch; return the decoded responses (a list, or one error object)."""
        ...


class Web3Provider:
    """web3.py's ``HTTPProvider`` without its own retry layer (the client retries and fails over).

    Its ``requests`` session ignores the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, netrc):
    it goes through ``proxy`` when one is given, else directly. ``headers`` go to this URL only.
    Response bodies are streamed and refused past ``max_response_bytes``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 15.0,
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        session = CappedSession(max_response_bytes)
        session.trust_env = False
        if proxy is not None:
            session.proxies = {"http": proxy, "https": proxy}
        self.session = session
        request_headers = {**HTTPProvider.get_request_headers(), **(headers or {})}
        self._provider = HTTPProvider(
            url,
            request_kwargs={"timeout": timeout, "headers": request_headers},
            session=session,
            exception_retry_configuration=None,
        )

    def make_request(self, method: str, params: Any) -> Any:
        return self._provider.make_request(RPCEndpoint(method), params)

    def make_batch_request(self, calls: Sequence[tuple[str, Any]]) -> Any:
        return self._provider.make_batch_request([(RPCEndpoint(m), p) for m, p in calls])


ProviderFactory = Callable[[str], JsonRpcProvider]


class _Transport(Exception):
    """A failure of one attempt that another attempt or URL may not see."""

    def __init__(self, message: str, *, timeout: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.too_large = too_large


def _error_of(method: str, error: Any) -> RpcError | _Transport:
    try:
        code = int(error.get("code", 0)) if isinstance(error, dict) else 0
    except (TypeError, ValueError):
        code = 0
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    message = scrub(message[:500])  # a node may echo the URL (and its key) back
    lowered = message.lower()
    if "rate limit" in lowered or "too many requests" in lowered or code == 429:
        return _Transport(f"{method}: rate limited: {message}")
    if code in _TOO_LARGE_CODES or any(hint in lowered for hint in _TOO_LARGE_HINTS):
        return QueryTooLarge(method, code, message)
    if code in _PERMANENT_CODES:
        return RpcError(method, code, message)
    return _Transport(f"{method}: JSON-RPC error {code}: {message}")


class RpcClient:
    """Calls and batches over ``urls`` in order, sticking to the last URL that worked.

    Each attempt tries the current URL; a transport failure moves to the next URL, and after a
    full round of URLs the client sleeps with exponential backoff (with jitter). Requests are
    spaced to at most ``requests_per_second``. ``round_trips`` counts HTTP requests, for benchmarks
    and tests; every request and every failed one is also counted in the
    ``paywatch_rpc_calls``/``paywatch_rpc_errors`` metrics under ``network``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        provider_factory: ProviderFactory | None = None,
        attempts: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 15.0,
        requests_per_second: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        network: str = "",
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.network = network
        factory = provider_factory or (lambda url: Web3Provider(url, timeout=timeout))
        self.urls = tuple(urls)
        register_secrets(urls=self.urls)
        self._providers = [factory(url) for url in self.urls]
        self._current = 0
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._monotonic = monotonic
        self._next_slot = 0.0
        self.round_trips = 0

    # --- public ----------------------------------------------------------------------------------

    @property
    def current(self) -> int:
        """The index in ``urls`` of the URL in use (the last one that answered)."""
        return self._current

    def call(self, method: str, params: Sequence[Any], *, splittable: bool = False) -> Any:
        """One request; its ``result``.

        ``splittable``: the caller can split the query, so a size refusal or a timeout raises
        QueryTooLarge at once; otherwise both are retried like any transient failure.
        """
        response = self._with_retries(method, lambda p: p.make_request(method, list(params)), splittable)
        if not isinstance(response, dict):
            raise RetryableChainError(scrub(f"{method}: malformed response {response!r:.200}"))
        if "error" in response and response["error"] is not None:
            problem = _error_of(method, response["error"])
            if isinstance(problem, RpcError):
                raise problem
            raise RetryableChainError(str(problem))
        return response.get("result")

    def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, chunk: int = 50, item_errors: bool = False
    ) -> list[Any]:
        """The results of ``calls`` in order, sent as JSON-RPC batches of at most ``chunk`` requests.

        A provider that refuses a batch's size gets smaller batches; any item's error fails all,
        unless ``item_errors``: then a failed item's place holds its RpcError (for look-ups of
        things that may have vanished meanwhile, such as mempool transactions).
        """
        results: list[Any] = []
        for offset in range(0, len(calls), chunk):
            results.extend(self._batch(calls[offset : offset + chunk], item_errors))
        return results

    # --- internals -------------------------------------------------------------------------------

    def _batch(self, calls: Sequence[tuple[str, Sequence[Any]]], item_errors: bool = False) -> list[Any]:
        if not calls:
            return []
        if len(calls) == 1 and not item_errors:
            return [self.call(calls[0][0], calls[0][1])]
        label = f"batch of {len(calls)} ({calls[0][0]})"
        payload = [(m, list(p)) for m, p in calls]
        try:
            response = self._with_retries(label, lambda p: p.make_batch_request(payload), True)
        except QueryTooLarge:
            if len(calls) == 1:
                raise
            half = len(calls) // 2
            return self._batch(calls[:half], item_errors) + self._batch(calls[half:], item_errors)
        if not isinstance(response, list):
            error = response.get("error") if isinstance(response, dict) else response
            problem = _error_of(label, error)
            if isinstance(problem, RpcError) and not isinstance(problem, QueryTooLarge):
                raise problem
            if len(calls) == 1:
                raise problem if isinstance(problem, RpcError) else RetryableChainError(str(problem))
            half = len(calls) // 2  # many providers answer an oversized batch with one error object
            return self._batch(calls[:half], item_errors) + self._batch(calls[half:], item_errors)
        if len(response) != len(calls):
            raise RetryableChainError(f"{label}: {len(response)} answers for {len(calls)} requests")
        results: list[Any] = []
        for (method, _params), item in zip(calls, response, strict=True):
            if not isinstance(item, dict):
                raise RetryableChainError(scrub(f"{method}: malformed batch item {item!r:.200}"))
            if item.get("error") is not None:
                problem = _error_of(method, item["error"])
                if item_errors:
                    error = item["error"] if isinstance(item["error"], dict) else {}
                    results.append(RpcError(method, int(error.get("code", 0)), str(error.get("message", ""))))
                    continue
                if isinstance(problem, RpcError):
                    raise problem
                raise RetryableChainError(str(problem))
            results.append(item.get("result"))
        return results

    def _with_retries(self, label: str, send: Callable[[JsonRpcProvider], Any], splittable: bool) -> Any:
        last: _Transport | None = None
        for attempt in range(self._attempts):
            for _ in range(len(self._providers)):
                provider = self._providers[self._current]
                try:
                    return self._send(label, self.urls[self._current], provider, send, splittable)
                except _Transport as exc:
                    if splittable and (exc.too_large or exc.timeout):
                        raise QueryTooLarge(label, 0, str(exc), timed_out=not exc.too_large) from None
                    last = exc
                    self._current = (self._current + 1) % len(self._providers)
            if attempt + 1 < self._attempts:
                delay = min(self._max_backoff, self._backoff * 2**attempt)
                self._sleep(delay * (0.5 + random.random() / 2))
        where = ", ".join(render_endpoint(url) for url in self.urls)
        raise RetryableChainError(f"{label}: every RPC URL failed ({where}); last error: {last}")

    def _throttle(self) -> None:
        """At most ``requests_per_second`` HTTP requests (a batch counts as one)."""
        if self._interval <= 0:
            return
        now = self._monotonic()
        if self._next_slot > now:
            self._sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + self._interval

    def _send(
        self,
        label: str,
        url: str,
        provider: JsonRpcProvider,
        send: Callable[[JsonRpcProvider], Any],
        splittable: bool,
    ) -> Any:
        self._throttle()
        self.round_trips += 1
        failure: _Transport | None
        try:
            response = self._request(label, provider, send, splittable)
        except _Transport as exc:
            count_rpc(self.network, url, failed=True)
            failure = _Transport(f"{render_endpoint(url)}: {exc}", timeout=exc.timeout, too_large=exc.too_large)
        else:
            failure = None
        if failure is not None:
            raise failure  # raised outside the except block: no library exception (and URL) chained
        errors = response if isinstance(response, list) else [response]
        failed = any(isinstance(item, dict) and item.get("error") is not None for item in errors)
        count_rpc(self.network, url, failed=failed)
        return response

    @staticmethod
    def _request(
        label: str, provider: JsonRpcProvider, send: Callable[[JsonRpcProvider], Any], splittable: bool
    ) -> Any:
        failure: _Transport | None = None
        try:
            response = send(provider)
        except requests.Timeout:
            failure = _Transport(f"{label}: timed out", timeout=True)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            failure = _Transport(f"{label}: HTTP {status}", too_large=status == 413)
        except Exception as exc:  # requests, urllib3, web3 and JSON errors: their text may hold the URL
            failure = _Transport(f"{label}: {describe(exc)}")
        if failure is not None:
            raise failure  # outside the except block, so the library's exception is not chained
        if isinstance(response, dict) and response.get("error") is not None and "result" not in response:
            problem = _error_of(label, response["error"])
            if isinstance(problem, _Transport):
                raise problem
            if isinstance(problem, QueryTooLarge) and not splittable:
                raise _Transport(str(problem))  # e.g. -32005 on a plain call: a rate limit, retry it
        return cast(Any, response)
