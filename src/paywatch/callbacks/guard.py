"""The SSRF guard at send time: resolve the callback host and require every address to be public.

DNS can change between invoice creation and delivery (rebinding), so the host is resolved right
before each attempt, every returned address is vetted, and the connection is then made to a vetted
address (see :mod:`.transport`), never to whatever a second lookup would say. Literal IPs in any
legacy spelling (``2130706433``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``) are judged as the address
they denote. Only ports 80 and 443 are allowed unless configured (``PAYWATCH_CALLBACK_PORTS``).
``allow_private`` (``PAYWATCH_ALLOW_PRIVATE_CALLBACKS=1``) lifts the address and port checks for
local development and tests; the scheme and form checks remain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from paywatch.errors import InputError, PaywatchError
from paywatch.netguard import DEFAULT_PORTS, IPAddress, literal_ip, special_purpose_block, validate_callback_url


class BlockedDestinationError(PaywatchError):
    """The callback URL may not be contacted (bad form, unresolvable, or a non-public address)."""


class Resolver(Protocol):
    """Turns a host name into the addresses a connection may use."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to (empty when it does not resolve)."""
        ...


DNS_WORKERS = 8
DNS_TIMEOUT = 10.0
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _dns_pool() -> ThreadPoolExecutor:
    """The process-wide pool for callback lookups (created on first use, shared by every resolver)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=DNS_WORKERS, thread_name_prefix="paywatch-dns")
        return _POOL


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), isolated from the rest of the process.

    Lookups run in a pool of their own (``DNS_WORKERS`` threads), never on asyncio's default
    executor that the scan steps use, so hanging lookups cannot delay scanning. Each waits at most
    ``timeout`` seconds (BlockedDestinationError after that), and a host has at most one lookup in
    flight: concurrent callers share its answer.
    """

    def __init__(self, *, timeout: float = DNS_TIMEOUT, pool: ThreadPoolExecutor | None = None) -> None:
        self._timeout = timeout
        self._pool = pool
        self._inflight: dict[tuple[str, int], concurrent.futures.Future[list[IPAddress]]] = {}
        self._lock = threading.Lock()

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        key = (host, port)
        with self._lock:
            future = self._inflight.get(key)
            if future is None:
                future = (self._pool or _dns_pool()).submit(_lookup, host, port)
                self._inflight[key] = future
                future.add_done_callback(lambda done: self._forget(key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self._timeout)
        except TimeoutError:
            raise BlockedDestinationError(
                f"DNS lookup for {host} took longer than {self._timeout:g} s"
            ) from None

    def _forget(self, key: tuple[str, int], done: concurrent.futures.Future[list[IPAddress]]) -> None:
        with self._lock:
            if self._inflight.get(key) is done:
                del self._inflight[key]


def _lookup(host: str, port: int) -> list[IPAddress]:
    """Blocking ``getaddrinfo``; every distinct address once, in the order given (empty on failure)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


@dataclass(frozen=True)
class Destination:
    """A vetted callback target: connect only to ``addresses`` for ``host``:``port``.

    ``host`` is the ASCII host as the HTTP client sees it (punycode, IPv6 without brackets).
    """

    url: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


async def vet(
    url: str, resolver: Resolver, *, allow_private: bool, ports: Collection[int] = DEFAULT_PORTS
) -> Destination:
    """Check ``url`` and resolve it; BlockedDestinationError unless every address is allowed.

    The port must be one of ``ports`` (80 and 443 by default), checked before any lookup.
    """
    try:
        validate_callback_url(url, allow_private=allow_private, ports=ports)
        parsed = httpx.URL(url)
    except InputError as exc:
        raise BlockedDestinationError(exc.message) from None
    except httpx.InvalidURL as exc:
        raise BlockedDestinationError(f"callback URL is malformed: {exc}") from None
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = literal_ip(urlsplit(url).hostname or host) or literal_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = await resolver.resolve(host, port)
        if not addresses:
            raise BlockedDestinationError(f"callback host {host} does not resolve")
    if not allow_private:
        for ip in addresses:
            block = special_purpose_block(ip)
            if block is not None:
                raise BlockedDestinationError(
                    f"callback host {host} resolves to {ip}, a special-purpose address ({block})"
                )
    return Destination(url=url, host=host, port=port, addresses=tuple(addresses))
