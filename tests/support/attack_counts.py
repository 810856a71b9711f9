"""The tally of the security suite's attack forms, printed at the end of every run.

The hooks here are imported by ``tests/conftest.py``, which the pytest-xdist controller loads too,
so the tally is printed where the summary is (the controller under ``-n``), from the reports the
workers send. ``tests/security/conftest.py`` tags each report with its attack kind.
"""

from __future__ import annotations

from collections import Counter

import pytest

KINDS = ("ssrf", "secret_leak", "hostile_input", "abuse")

_tried: Counter[str] = Counter()
_stopped: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count one attack form per security test case; "stopped" means the test passed."""
    kind = dict(report.user_properties).get("attack")
    if kind is None or report.when != "call":
        return
    _tried[str(kind)] += 1
    if report.passed:
        _stopped[str(kind)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """``security suite: ssrf 131 tried, 131 stopped; ...``"""
    if not _tried:
        return
    parts = [f"{k} {_tried[k]} tried, {_stopped[k]} stopped" for k in KINDS if _tried[k]]
    terminalreporter.write_line("security suite: " + "; ".join(parts))
