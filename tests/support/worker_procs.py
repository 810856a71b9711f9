"""Helpers of the worker tests: anvil with a test USDT, a networks file, and real ``paywatch``
processes (``python -m paywatch worker|run``) configured through ``PAYWATCH_*`` and logging JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from paywatch.config import raw_document
from paywatch.devnet.chain import Chain
from paywatch.devnet.node import ANVIL_IN_NODE_MODULES, AnvilNode
from tests.conftest import EVM_XPUB
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
USDT = 10**6
T = TypeVar("T")


def anvil(*args: str) -> AnvilNode:
    """A started anvil (the test is skipped when anvil is not installed)."""
    if not (ROOT / ANVIL_IN_NODE_MODULES).exists():
        pytest.skip("anvil is not installed (npm install @foundry-rs/anvil)")
    return AnvilNode(*args, port=free_port(), binary=ROOT / ANVIL_IN_NODE_MODULES).start()


@dataclass
class Devnet:
    """One anvil chain with a deployed test USDT; the payer holds 1,000,000 USDT."""

    node: AnvilNode
    chain: Chain
    usdt: str

    @classmethod
    def start(cls, *args: str) -> Devnet:
        node = anvil(*args)
        try:
            chain = Chain(node)
            usdt = chain.deploy("TestToken", "Tether USD (test)", "USDT", 6, 10**9 * USDT)
            chain.wait(chain.token_transfer(usdt, chain.payer, 10**6 * USDT, sender=chain.accounts[0]))
        except BaseException:
            node.close()
            raise
        return cls(node, chain, usdt)

    def close(self) -> None:
        self.node.close()


def network_entry(
    rpc_urls: list[str],
    usdt: str,
    *,
    chain_id: int = 31337,
    poll: float = 0.5,
    confirmations: int = 2,
    batch: int = 100,
) -> dict[str, Any]:
    return {
        "family": "evm",
        "chain_id": chain_id,
        "rpc_urls": rpc_urls,
        "confirmations": confirmations,
        "poll_interval": poll,
        "batch_blocks": batch,
        "xpub": EVM_XPUB,
        "explorer_tx_url": None,
        "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": usdt, "decimals": 6}},
    }


def write_networks(path: Path, networks: dict[str, dict[str, Any]]) -> Path:
    path.write_text(raw_document({"networks": networks}))
    return path


def paywatch_env(database_url: str, networks: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(
        PAYWATCH_DATABASE_URL=database_url,
        PAYWATCH_NETWORKS=str(networks),
        PAYWATCH_LOG_JSON="1",
        PAYWATCH_ALLOW_PRIVATE_CALLBACKS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class PaywatchProcess:
    """``python -m paywatch ARGS`` with its stderr (the JSON log) in ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self._records: list[dict[str, Any]] = []
        self._read = 0  # bytes of the log parsed into _records (whole lines only)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log records so far (other lines, e.g. a traceback, are kept as ``raw``).

        Only the lines written since the last call are read and parsed: tests poll this while a
        worker logs every step, and re-parsing the whole log each time cost the test CPU."""
        running = self.proc.poll() is None
        with open(self.log_path, "rb") as log:
            log.seek(self._read)
            new = log.read()
        if running:  # a line still being written is read on a later call
            new = new[: new.rfind(b"\n") + 1]
        self._read += len(new)
        for raw in new.decode(errors="replace").splitlines():
            try:
                self._records.append(json.loads(raw))
            except ValueError:
                self._records.append({"raw": raw})
        return list(self._records)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


HANG_GUARD = 240.0
"""No wait gives up sooner: a timeout only catches a hang, never judges speed (a loaded CI box is slow)."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test if it never does.

    ``timeout`` is how long it normally takes at most; the test fails only after
    ``max(timeout, HANG_GUARD)`` seconds, so a slow machine is never a failure.
    """
    timeout = max(timeout, HANG_GUARD)
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def ts(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class ScanInterval:
    """One scan of one network by one process, from its start line to its end line (or ``None``)."""

    network: str
    pid: int
    start: float
    end: float | None


def scan_intervals(records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> list[ScanInterval]:
    """Pair the ``scan started``/``scan finished`` lines of each (network, pid)."""
    open_at: dict[tuple[str, int], float] = {}
    out: list[ScanInterval] = []
    for r in records:
        if r.get("logger") != "paywatch.worker.scan":
            continue
        key = (str(r["network"]), int(r["pid"]))
        if r["msg"] == "scan started":
            assert key not in open_at, f"two scans started without an end: {key}"
            open_at[key] = ts(r)
        elif str(r["msg"]).startswith("scan finished"):
            out.append(ScanInterval(key[0], key[1], open_at.pop(key), ts(r)))
    out.extend(ScanInterval(n, p, start, None) for (n, p), start in open_at.items())
    return sorted(out, key=lambda i: (i.network, i.start))
