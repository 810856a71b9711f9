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
from tests.support.ltc_node import LtcNode

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


@pytest.fixture(scope="session")
def _process_ltc_node() -> Iterator[LtcNode]:
    n = LtcNode().start()
    try:
        n.setup_wallet()
        yield n
    finally:
        n.close()


@pytest.fixture
def ltc_node(_process_ltc_node: LtcNode) -> LtcNode:
    """One regtest litecoind (MWEB off) with a funded wallet per test process (xdist worker), shared by
    the UTXO modules instead of one node each: starting one costs seconds, and their tests are
    independent of each other's blocks (each has a fresh database; ``UtxoHarness`` mines what an
    earlier test left in the mempool). A test that stopped it, or unloaded its wallet, and failed
    before putting it back leaves it as it was found for the next one."""
    node = _process_ltc_node
    if node.proc is None:
        node.start()
    elif "w" not in node.rpc("listwallets"):
        node.load_wallet()
    return node


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


#: Tests marked ``slow`` here rather than in their modules: every test that took 3 s or more
#: (setup + call + teardown, either database) in a ``--durations`` profile of ``make test-fast``
#: on SQLite (2 cores under load ~14, 4 workers; about 1.5 s on a quiet machine). They still run
#: in ``make test``; ``make test-fast`` leaves them out, which keeps the inner loop under a
#: minute. A test that grows past that belongs here (or gets ``@pytest.mark.slow`` in its module).
SLOW_BY_PROFILE: dict[str, tuple[str, ...]] = {
    "tests/security/test_cli_output.py": ("test_callbacks_test_prints_a_hostile_location_literally",),
    "tests/security/test_hostile_evm_node.py": (
        "test_fabricated_answers_fail_the_step_and_store_nothing",
        "test_quorum_two_refuses_a_range_a_second_node_disagrees_on",
    ),
    "tests/security/test_hostile_input.py": ("test_hostile_metadata_is_a_422_naming_metadata",),
    "tests/security/test_secret_leak.py": (
        "test_proxy_credentials_leak_nowhere",
        "test_rpc_failure_leaks_no_secret",
    ),
    "tests/security/test_worker_process_leak.py": ("test_worker_log_and_separate_metrics_leak_nothing",),
    "tests/test_allocation.py": (
        "test_memo_strategy_unique_memos_on_shared_address",
        "test_threads_in_one_process_share_nothing",
        "test_unique_amount_gives_up_with_conflict",
        "test_unique_amount_is_not_reissued_inside_the_late_window",
    ),
    "tests/test_api.py": ("test_list_paginates_newest_first_and_filters_by_status",),
    "tests/test_callbacks_admin.py": ("test_cli_test_list_redeliver_rotate_enable",),
    "tests/test_callbacks_delivery.py": (
        "test_a_corrupt_secret_fails_its_event_only",
        "test_two_replicas_never_send_the_same_event_twice",
    ),
    "tests/test_chain_integrity.py": (
        "test_a_rescan_ahead_of_the_cursor_cannot_credit_a_transaction_a_reorg_drops",
        "test_a_token_transfer_remined_at_another_log_index_is_credited_once",
    ),
    "tests/test_checkout_api.py": (
        "test_attempts_per_invoice_are_bounded",
        "test_bad_fiat_input_names_the_field",
        "test_expired_invoice_refuses_attempts",
    ),
    "tests/test_checkout_browser.py": (
        "test_expired_page_refuses_a_new_attempt",
        "test_partial_then_remainder",
        "test_pay_through_the_page",
    ),
    "tests/test_checkout_logo.py": ("test_jpeg_replaces_and_delete_removes",),
    "tests/test_checkout_rates.py": (
        "test_fiat_cross_through_ecb_reference_rates",
        "test_garbage_from_one_source_is_ignored",
    ),
    "tests/test_checkout_worker.py": (
        "test_fiat_callbacks_are_signed_and_delivered_in_order",
        "test_window_closing_is_noticed_by_the_worker",
    ),
    "tests/test_cli.py": (
        "test_bad_networks_file_fails_at_start_with_the_key_path",
        "test_private_key_in_place_of_xpub_is_refused",
    ),
    "tests/test_domain_properties.py": (
        "test_late_payments_never_count_unless_accepted",
        "test_orphaning_or_removing_a_payment_never_increases_paid",
        "test_result_depends_only_on_inputs",
        "test_sums_and_status_are_consistent",
        "test_terminal_statuses_never_change",
    ),
    "tests/test_dust.py": (
        "test_a_transfer_at_min_amount_counts",
        "test_one_wei_and_token_dust_change_nothing_and_cancel_still_works",
    ),
    "tests/test_evm_internal.py": (
        "test_forwarded_payment_is_credited_with_its_trace_position",
        "test_internal_coin_of_the_wrong_asset_goes_to_the_inbox",
        "test_reverted_inner_sends_are_never_credited",
    ),
    "tests/test_evm_payments.py": (
        "test_ignored_transfers",
        "test_late_payment_judged_by_block_time",
        "test_partial_then_top_up",
        "test_unique_amount_strategy_and_unmatched_inbox",
    ),
    "tests/test_evm_reorgs.py": ("test_reorg_removes_a_payment_then_it_returns_once",),
    "tests/test_evm_resilience.py": (
        "test_failover_to_the_next_rpc_url_and_retry_after_503",
        "test_node_stopped_mid_scan_and_restarted_skips_nothing",
        "test_provider_refusing_large_log_ranges_loses_nothing",
    ),
    "tests/test_layout.py": ("test_chains_and_metrics_never_import_the_store",),
    "tests/test_ledger.py": (
        "test_expiry_sweep_makes_pending_expired_and_history_shows_both",
        "test_history_and_outbox_commit_with_the_change_or_not_at_all",
    ),
    "tests/test_migration_positions.py": ("test_existing_rows_get_their_position_or_are_adopted_later",),
    "tests/test_scanner_rescan.py": (
        "test_cli_rescan_and_rescan_tx",
        "test_rescan_range_dry_run_then_real_then_idempotent",
    ),
    "tests/test_status_cli.py": ("test_queue_invoices_and_inbox_are_counted",),
    "tests/test_storage.py": (
        "test_amount_order_and_comparison_are_numeric",
        "test_invalid_amounts_refused",
        "test_payment_unique_per_transfer",
    ),
    "tests/test_utxo_mweb.py": (
        "test_mweb_blocks_and_mempool_after_activation",
        "test_scan_across_mweb_activation_with_hogex_and_a_peg_out",
    ),
    "tests/test_utxo_payments.py": (
        "test_coinbase_output_counts_only_after_maturity",
        "test_exact_partial_top_up_and_overpaid_in_one_block",
        "test_mempool_sighting_then_confirmation_then_completed",
        "test_rbf_replacement_paying_less_moves_the_invoice_back",
        "test_reorg_removes_then_mempool_and_a_new_block_restore",
        "test_store_refusing_rbf_mempool_payments_waits_for_a_block",
    ),
    "tests/test_utxo_scanning.py": (
        "test_cli_rescan_and_rescan_tx_on_utxo",
        "test_mempool_payment_dropped_by_the_node_moves_back_and_comes_back",
        "test_node_stopped_mid_scan_and_restarted_skips_no_block",
    ),
    "tests/test_watch_versions.py": (
        "test_cancel_and_mark_paid_keep_the_targets_watched",
        "test_the_deadline_is_the_expiry_plus_the_late_window_to_the_second",
    ),
}


def _slow_by_profile(item: pytest.Item) -> bool:
    path, _, name = item.nodeid.partition("::")
    return name.partition("[")[0] in SLOW_BY_PROFILE.get(path, ())


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of ``SLOW_BY_PROFILE`` ``slow``; then order them: the longest tests first
    (``LONGEST_FIRST``, then the other tests marked ``slow``), the PostgreSQL variant of each
    before the SQLite one (it takes longer); the rest keep their order.

    ``make test`` runs xdist with ``--maxschedchunk 1``: a worker holds its running test and one
    more, and the first hand-out gives each worker two consecutive tests. So each of the first
    ``PYTEST_XDIST_WORKER_COUNT`` long tests is followed by a short one: no worker starts with two
    long tests queued one behind the other.
    """
    for item in items:
        if _slow_by_profile(item):
            item.add_marker(pytest.mark.slow)

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
