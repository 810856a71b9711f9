"""Free loopback ports for servers that a test hands a port number (anvil, ``paywatch run``).

Picking a port with ``bind(0)``, closing it and passing the number to a child process leaves a
window in which another process may take it; under pytest-xdist several workers do that at once.
So each xdist worker takes ports from its own block below the kernel's ephemeral range (32768 and
up on Linux, where ``bind(0)`` and outgoing connections land), checks each by binding it, and
never hands out the same number twice.
"""

from __future__ import annotations

import os
import socket
import threading

BASE = 20_000
BLOCK = 600  # ports per worker: 20 workers fit below 32768

_given: set[int] = set()
_lock = threading.Lock()


def worker_id() -> str:
    """``gw0``, ``gw1``... under pytest-xdist; ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _worker_index() -> int:
    wid = worker_id()
    return int(wid[2:]) + 1 if wid.startswith("gw") and wid[2:].isdigit() else 0


def free_port() -> int:
    """A loopback port no other test of this run is using or has been given."""
    first = BASE + (_worker_index() % 20) * BLOCK
    offset = os.getpid() % BLOCK  # two runs side by side start at different places
    with _lock:
        for i in range(BLOCK):
            port = first + (offset + i) % BLOCK
            if port in _given:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port left in {first}..{first + BLOCK - 1}")
