"""``paywatch ARGS`` for tests: the real entry point in a process of its own, or the same Typer app
in this process (typer's CliRunner: the same code, exit code, stdout and stderr, without the
interpreter's start-up). Keep at least one real process per command family; the rest in-process.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence

from typer.testing import CliRunner

from paywatch.cli import app as cli_app
from paywatch.cli.support import close_opened

PAYWATCH = [sys.executable, "-m", "paywatch"]


def paywatch(
    args: Sequence[str], env: Mapping[str, str], *, process: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``paywatch ARGS`` with ``env``; the result of a real process (``process``) or of the app."""
    if process:
        return subprocess.run([*PAYWATCH, *args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    try:
        invoked = CliRunner().invoke(cli_app, list(args), env=dict(env))
    finally:
        close_opened()  # a real process's connections end with it; these would wait for the GC
    stderr = invoked.stderr
    if invoked.exception is not None and invoked.exc_info is not None and not isinstance(invoked.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*invoked.exc_info))  # as a real process prints it
    return subprocess.CompletedProcess(list(args), invoked.exit_code, invoked.stdout, stderr)
