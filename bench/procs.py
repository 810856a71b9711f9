"""What the scale benchmarks share: a fresh PostgreSQL database, anvil, real processes and their memory.

The paywatch processes are started the way the tests start them (``python -m paywatch ...``, see
tests/support/worker_procs.py); this module adds what a benchmark needs on top: waiting for a port,
a child's peak RSS, and a throwaway database next to the one given on the command line.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url

from paywatch.devnet.node import AnvilNode, find_anvil
from paywatch.store.db import normalize_url

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@contextmanager
def fresh_database(database: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``database``; dropped on the way out."""
    base = make_url(normalize_url(database))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_anvil() -> AnvilNode:
    """A fresh anvil from node_modules (``make setup`` installs it)."""
    return AnvilNode(binary=find_anvil(ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; SystemExit after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Child:
    """A child process whose stderr goes to ``log_path``; ``close()`` sends SIGTERM, then kills."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, *, pipe_stdout: bool = False) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        stdout = subprocess.PIPE if pipe_stdout else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=stdout, stderr=self._log)

    def first_line(self) -> str:
        """The first line the child printed (``pipe_stdout`` children only)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.check()
        return line

    @classmethod
    def paywatch(cls, args: list[str], env: dict[str, str], log_path: Path) -> Child:
        return cls([sys.executable, "-m", "paywatch", *args], env, log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """SystemExit with the log's tail when the process died."""
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{self.proc.args} exited with {self.proc.returncode}:\n{tail}")

    def close(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
