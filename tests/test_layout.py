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


def test_every_test_named_in_the_conftest_lists_exists() -> None:
    """``tests/conftest.py``'s ``SLOW_BY_PROFILE`` and ``LONGEST_FIRST`` name tests by file and
    function: a renamed or removed test would silently fall back into ``make test-fast``'s set, or
    lose its early start."""
    import ast
    from pathlib import Path

    from tests.conftest import LONGEST_FIRST, SLOW_BY_PROFILE

    root = Path(__file__).resolve().parent.parent
    missing = []
    for path, names in SLOW_BY_PROFILE.items():
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        missing += [f"{path}::{name}" for name in names if name not in defined]
    for entry in LONGEST_FIRST:
        path, _, name = entry.partition("::")
        if not (root / path).is_file():
            missing.append(entry)
        elif name:
            tree = ast.parse((root / path).read_text(encoding="utf-8"))
            if not any(isinstance(n, ast.FunctionDef) and n.name.startswith(name) for n in ast.walk(tree)):
                missing.append(entry)
    assert missing == []
