"""Shared fixtures: a fresh database per test (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
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


#: The longest tests, longest first (a durations profile of the whole suite on PostgreSQL and
#: SQLite, `pytest --durations=120`). Each starts at once on an xdist worker of its own while the
#: short tests fill the other workers, so none of them is left to end last.
LONGEST_FIRST = (
    "tests/test_worker_crash.py",
    "tests/test_model.py::test_money_model",
    "tests/test_utxo_payments.py::test_one_thousand_watched_addresses",
    "tests/test_invoice_mutations.py::test_api_cancel_and_mark_paid_race_credits_postgres",
    "tests/test_store_policy.py::test_cli_store_update",
    "tests/test_store_policy_worker.py",
    "tests/test_api_schema.py",
    "tests/test_worker_scaleout.py",
    "tests/test_cli.py::test_store_and_invoice_commands",
    "tests/test_unmatched.py::test_cli_lists_and_attaches",
    "tests/test_worker_basics.py",
    "tests/test_callbacks_crash.py",
    "tests/test_demo.py",
    "tests/test_worker_rpc_faults.py",
    "tests/test_evm_payments.py::test_a_thousand",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (``LONGEST_FIRST``, then the other tests marked ``slow``), the
    PostgreSQL variant of each before the SQLite one (it takes longer); the rest keep their order.

    ``make test`` runs xdist with ``--maxschedchunk 1``: a worker holds its running test and one
    more, and the first hand-out gives each worker two consecutive tests. So each of the first
    ``PYTEST_XDIST_WORKER_COUNT`` long tests is followed by a short one: no worker starts with two
    long tests queued one behind the other.
    """

    def rank(item: pytest.Item) -> tuple[int, int]:
        for n, prefix in enumerate(LONGEST_FIRST):
            if item.nodeid.startswith(prefix):
                return n, 0 if "postgresql" in item.nodeid else 1
        return (len(LONGEST_FIRST), 0) if item.get_closest_marker("slow") is not None else (len(LONGEST_FIRST) + 1, 0)

    items.sort(key=rank)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    long = [item for item in items if rank(item)[0] < len(LONGEST_FIRST) + 1]
    short = items[len(long) :]
    if workers > 1 and len(long) >= workers and len(short) >= workers:
        head = [x for pair in zip(long[:workers], short[:workers], strict=True) for x in pair]
        items[:] = head + long[workers:] + short[workers:]
