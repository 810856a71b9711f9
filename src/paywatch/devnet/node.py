"""One anvil process on a free loopback port.

anvil comes from npm (``npm install @foundry-rs/anvil``, done by the README set-up); nothing is
downloaded at run time.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from paywatch.errors import ConfigError

ANVIL_IN_NODE_MODULES = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
CHAIN_ID = 31337


def find_anvil(explicit: Path | None = None) -> Path:
    """The anvil binary: ``explicit``, ./node_modules, the repository's node_modules, or PATH."""
    repo = Path(__file__).resolve().parents[3]
    candidates = [explicit] if explicit else [Path.cwd() / ANVIL_IN_NODE_MODULES, repo / ANVIL_IN_NODE_MODULES]
    for candidate in candidates:
        if candidate is not None and candidate.exists():
            return candidate
    on_path = shutil.which("anvil")
    if on_path and explicit is None:
        return Path(on_path)
    raise ConfigError("anvil is not installed: run the README set-up (`make demo` runs `npm install`)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AnvilNode:
    """An anvil process; ``stop()`` then ``start()`` restarts it on the same port (a fresh chain)."""

    def __init__(self, *args: str, port: int | None = None, binary: Path | None = None) -> None:
        self.binary = find_anvil(binary)
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=10)

    def start(self, timeout: float = 20.0) -> AnvilNode:
        self.proc = subprocess.Popen(
            [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--silent", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.rpc("eth_chainId")
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"anvil exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not start within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self._http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        reply.raise_for_status()
        body = reply.json()
        if body.get("error"):
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]
