"""The layout keeps the architecture visible: chain adapters never reach the store."""

from __future__ import annotations

import subprocess
import sys


def test_chains_and_metrics_never_import_the_store() -> None:
    probe = (
        "import sys, paywatch.metrics, paywatch.chains.registry, paywatch.chains.evm, paywatch.chains.tron\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('paywatch.store', 'sqlalchemy', 'sqlmodel')))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in out if m.startswith("paywatch.store")] == []
    assert "sqlmodel" not in out
