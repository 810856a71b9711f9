"""The layout keeps the architecture visible: chain adapters never reach the store."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_chains_and_metrics_never_import_the_store() -> None:
    probe = (
        "import sys, paywatch.metrics, paywatch.chains.registry, paywatch.chains.evm, paywatch.chains.tron\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('paywatch.store', 'sqlalchemy', 'sqlmodel')))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in out if m.startswith("paywatch.store")] == []
    assert "sqlmodel" not in out


def _functions(path: Path) -> set[str]:
    """The names of the functions ``path`` defines (none when there is no such file)."""
    if not path.is_file():
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_named_in_the_conftest_lists_exists() -> None:
    """``tests/conftest.py``'s ``SLOW_BY_PROFILE`` and ``LONGEST_FIRST`` name tests by file and
    function: a renamed or removed test would silently fall back into ``make test-fast``'s set, or
    lose its early start."""
    from tests.conftest import LONGEST_FIRST, SLOW_BY_PROFILE

    root = Path(__file__).resolve().parent.parent
    missing = []
    for path, names in SLOW_BY_PROFILE.items():
        defined = _functions(root / path)
        missing += [f"{path}::{name}" for name in names if name not in defined]
    for entry in LONGEST_FIRST:  # a file, or a prefix of test names in it (as conftest matches them)
        path, _, prefix = entry.partition("::")
        defined = _functions(root / path)
        if not (root / path).is_file() or not any(name.startswith(prefix) for name in defined):
            missing.append(entry)
    assert missing == []
