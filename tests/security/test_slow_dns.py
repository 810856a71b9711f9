"""Slow DNS cannot stall scanning: callback lookups run in their own bounded pool, with a timeout
and one lookup per host at a time, never on asyncio's default executor that the scan steps use.

The operating system's resolver is replaced by a function that blocks until the test releases it
(the OS boundary; no code of ours is faked). Nothing waits for wall-clock windows: the unrelated
executor task must finish while every lookup is still hanging.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from paywatch.callbacks.guard import BlockedDestinationError, SystemResolver, vet

pytestmark = pytest.mark.attack("abuse")


class HangingDns:
    """A getaddrinfo that blocks every lookup until released, counting the calls per host."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        with self._lock:
            self.calls[host] = self.calls.get(host, 0) + 1
        self.release.wait(60)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]


@pytest.fixture
def hanging(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingDns]:
    dns = HangingDns()
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    yield dns
    dns.release.set()


@pytest.mark.parametrize("lookups", [40, 200])
async def test_hanging_lookups_do_not_delay_an_unrelated_executor_task(hanging: HangingDns, lookups: int) -> None:
    resolver = SystemResolver()
    pending = [
        asyncio.create_task(resolver.resolve(f"slow-{i}.merchant.example", 443)) for i in range(lookups)
    ]
    await asyncio.sleep(0)  # let every lookup start
    loop = asyncio.get_running_loop()
    unrelated = loop.run_in_executor(None, lambda: "scan step done")
    done, _ = await asyncio.wait({unrelated}, timeout=30)  # an upper bound for a failure, not a window
    assert unrelated in done and not hanging.release.is_set()
    assert unrelated.result() == "scan step done"
    hanging.release.set()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_a_hanging_lookup_times_out_as_a_blocked_destination(hanging: HangingDns) -> None:
    resolver = SystemResolver(timeout=0.05)
    with pytest.raises(BlockedDestinationError, match="DNS lookup"):
        await vet("https://stuck.merchant.example/cb", resolver, allow_private=False)


async def test_concurrent_lookups_of_one_host_share_a_single_query(hanging: HangingDns) -> None:
    resolver = SystemResolver()
    tasks = [asyncio.create_task(resolver.resolve("same.merchant.example", 443)) for _ in range(25)]
    await asyncio.sleep(0)
    hanging.release.set()
    results = await asyncio.gather(*tasks)
    assert all(r == results[0] for r in results) and results[0]
    assert hanging.calls == {"same.merchant.example": 1}
