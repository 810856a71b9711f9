"""Shared fixtures: a fresh database per test (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig, NetworkConfig, Settings, parse_networks
from paywatch.store.db import make_engine
from tests.support.attack_counts import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401 (hooks)
from tests.support.databases import PG_URL, fresh_postgres_database, fresh_sqlite_database
from tests.support.databases import finish as finish_databases

# The BIP-39 test mnemonic "abandon ... about": public test vectors, never real funds.
EVM_XPUB = (
    "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
)
TRON_XPUB = (
    "xpub6D1AabNHCupeiLM65ZR9UStMhJ1vCpyV4XbZdyhMZBiJXALQtmn9p42VTQckoHVn8WNqS7dqnJokZHAHcHGoaQgmv8D45oNUKx6DZMNZBCd"
)
USDT_ETH = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
USDT_TRON = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"

TEST_NETWORKS = f"""
networks:
  ethereum:
    family: evm
    chain_id: 1
    rpc_urls: ["http://127.0.0.1:1"]
    confirmations: 3
    xpub: "{EVM_XPUB}"
    explorer_tx_url: "https://etherscan.io/tx/{{tx}}"
    assets:
      ETH: {{native: true, decimals: 18}}
      USDT: {{contract: "{USDT_ETH}", decimals: 6}}
  tron:
    family: tron
    rpc_urls: ["http://127.0.0.1:1"]
    finality: solidified
    xpub: "{TRON_XPUB}"
    assets:
      TRX: {{native: true, decimals: 6}}
      USDT: {{contract: "{USDT_TRON}", decimals: 6}}
"""


def database_params() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(params=database_params())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's own: a copy of the process's migrated template
    (``tests/support/databases.py``); PostgreSQL ones are created and dropped around the test."""
    if request.param == "sqlite":
        yield fresh_sqlite_database(tmp_path / "paywatch.db")
        return
    yield from fresh_postgres_database()


def pytest_sessionfinish() -> None:
    """Each test process drops its template databases (and the test databases still queued)."""
    finish_databases()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def networks() -> dict[str, NetworkConfig]:
    return parse_networks(TEST_NETWORKS, source="test-networks.yaml", env={})


@pytest.fixture
def app_config(db_url: str, networks: dict[str, NetworkConfig], tmp_path: Path) -> AppConfig:
    settings = Settings(database_url=db_url, networks=tmp_path / "networks.yaml", allow_private_callbacks=False)
    return AppConfig(settings=settings, networks=networks)


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end tests (marked ``slow``) first: under pytest-xdist each starts at once on
    a worker of its own while the short ones fill the other workers, so none of them ends last."""
    longest = ("tests/test_worker_crash.py", "tests/test_evm_payments.py::test_a_thousand")  # minutes each

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(longest):
            return 0
        return 1 if item.get_closest_marker("slow") is not None else 2

    items.sort(key=rank)
