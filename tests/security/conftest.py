"""Counts the attack forms the security suite tries, by kind, and prints them after the run.

Every test in ``tests/security/`` carries ``@pytest.mark.attack("KIND")`` (one of ``KINDS``); a
parametrized test counts once per case. The summary line reads, for example::

    security suite: ssrf 72 tried, 72 stopped; secret_leak 24 tried, 24 stopped; ...

"Stopped" means the test passed: the attack was refused or leaked nothing. The tally itself is
kept and printed by ``tests/support/attack_counts.py`` (through ``tests/conftest.py``, so that
it also works under pytest-xdist, whose controller never loads this file).
"""

from __future__ import annotations

import pytest

from tests.support.attack_counts import KINDS


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
