"""`paywatch demo` as a newcomer runs it: exits 0 with a summary well within 60 s."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from paywatch.devnet.node import find_anvil
from paywatch.errors import ConfigError


def anvil_or_skip() -> Path:
    try:
        return find_anvil()
    except ConfigError as exc:
        pytest.skip(str(exc))


@pytest.mark.anvil
@pytest.mark.slow
def test_demo_runs_to_a_verified_summary(tmp_path: Path) -> None:
    anvil_or_skip()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "paywatch", "demo", "--workdir", str(tmp_path), "--timeout", "600"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).resolve().parents[1],
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "statuses ['COMPLETED', 'COMPLETED', 'EXPIRED']" in result.stdout
    assert "all signatures verified" in result.stdout
    print(f"\ndemo: {elapsed:.1f} s")  # about 10 s on a quiet machine; a loaded one is no failure
    assert (tmp_path / "demo.db").exists()
