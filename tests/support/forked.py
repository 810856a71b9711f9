"""Real child processes without the interpreter's start-up: forked from a server that has already
imported paywatch (the standard library's ``multiprocessing`` forkserver).

``python -c "import paywatch.worker"`` costs about 2 s of CPU (web3, SQLAlchemy, FastAPI, bip_utils);
the crash suite starts a worker 21 times per database. A forked child skips only that import: it
is a process of its own (its own pid, memory, database connections and signal handlers) that the
test starts, SIGKILLs or SIGTERMs and waits for like any other, and it runs the same function a
``python -m`` child runs. The server is one single-threaded process per test process, started on
first use; it imports ``PRELOAD`` and nothing else (no engine, no event loop, no thread), so a
child starts from a clean interpreter state. Start-up itself (imports, the CLI entry point) stays
covered by the tests that run ``python -m paywatch`` and the console script.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

#: Imported once by the fork server; a module missing here is simply imported by the child.
PRELOAD = [
    "paywatch.worker",
    "paywatch.cli",
    "paywatch.callbacks.dispatcher",
    "tests.test_worker_crash",
    "tests.test_callbacks_crash",
]

_context: ForkServerContext | None = None


def _ctx() -> ForkServerContext:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        assert isinstance(ctx, ForkServerContext)
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def _child(target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str], log: str | None) -> None:
    """In the child: the given environment, stdout and stderr appended to ``log``, then ``target``."""
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    # like PYTHONUNBUFFERED=1: every line reaches the file as it is written
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    target(*args)


class ForkedProcess:
    """``target(*args)`` in a child forked from the preloaded server, with ``env`` as its whole
    environment and its output appended to ``log``. ``returncode`` follows ``subprocess``:
    ``-9`` after SIGKILL, the exit status otherwise."""

    def __init__(self, target: Callable[..., Any], *args: Any, env: dict[str, str], log: Path | None = None) -> None:
        self._proc: BaseProcess = _ctx().Process(
            target=_child, args=(target, args, env, str(log) if log else None), daemon=False
        )
        self._proc.start()

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        code = self._proc.exitcode
        if code is None:
            raise TimeoutError(f"process {self.pid} still running after {timeout} s")
        return code
