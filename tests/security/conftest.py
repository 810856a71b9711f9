"""Counts the attack forms the security suite tries, by kind, and prints them after the run.

Every test in ``tests/security/`` carries ``@pytest.mark.attack("KIND")`` (one of ``KINDS``); a
parametrized test counts once per case. The summary line reads, for example::

    security suite: ssrf 72 tried, 72 stopped; secret_leak 24 tried, 24 stopped; ...

"Stopped" means the test passed: the attack was refused or leaked nothing.
"""

from __future__ import annotations

from collections import Counter

import pytest

KINDS = ("ssrf", "secret_leak", "hostile_input", "abuse")

_tried: Counter[str] = Counter()
_stopped: Counter[str] = Counter()


def _kind(item: pytest.Item) -> str:
    marker = item.get_closest_marker("attack")
    if marker is None or not marker.args or marker.args[0] not in KINDS:
        raise pytest.UsageError(f"{item.nodeid}: security tests need @pytest.mark.attack(KIND), KIND in {KINDS}")
    return str(marker.args[0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in item.nodeid.replace("\\", "/"):
            _kind(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    if "tests/security/" in item.nodeid.replace("\\", "/"):
        outcome.get_result().user_properties.append(("attack", _kind(item)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Runs where the summary is printed (also the controller under pytest-xdist)."""
    kind = dict(report.user_properties).get("attack")
    if kind is None or report.when != "call":
        return
    _tried[str(kind)] += 1
    if report.passed:
        _stopped[str(kind)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _tried:
        return
    parts = [f"{k} {_tried[k]} tried, {_stopped[k]} stopped" for k in KINDS if _tried[k]]
    terminalreporter.write_line("security suite: " + "; ".join(parts))
