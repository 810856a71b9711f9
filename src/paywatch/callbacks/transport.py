"""An httpx transport that connects only to addresses the SSRF guard vetted.

The request keeps its URL, so the ``Host`` header and the TLS SNI name (and the certificate
check) are the merchant's host name; only the TCP connect is pinned to the vetted IP. Pins live in
a context variable set around each request with :func:`pinned`: a connect for a host without a pin
is refused, so nothing reaches the network unvetted. Environment proxies are ignored
(``trust_env=False``), as a proxy would bypass the pinning.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import httpcore
import httpx

from paywatch.callbacks.guard import Destination
from paywatch.netguard import IPAddress

_PINS: ContextVar[Mapping[tuple[str, int], tuple[IPAddress, ...]] | None] = ContextVar(
    "paywatch_callback_pins", default=None
)


@contextmanager
def pinned(destination: Destination) -> Iterator[None]:
    """Within this block, connections to the destination's host go to its vetted addresses only."""
    token = _PINS.set({(destination.host, destination.port): destination.addresses})
    try:
        yield
    finally:
        _PINS.reset(token)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Network backend whose TCP connects go to the pinned addresses of the current context."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = (_PINS.get() or {}).get((host, port))
        if not addresses:
            raise httpcore.ConnectError(f"refusing to connect to {host}:{port}: not vetted by the SSRF guard")
        failure: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not callback destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` over a :class:`PinnedBackend` (HTTP/1.1, no env proxies).

    ``network`` is the backend that makes the pinned connects (the real one by default).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(network),
        )
