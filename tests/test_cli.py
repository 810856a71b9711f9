"""The admin CLI as an operator runs it: a real process, environment configuration, real database."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_NETWORKS
from tests.support.cli import paywatch


def run(
    args: list[str], env: dict[str, str], ok: bool = True, *, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """``paywatch ARGS`` (tests.support.cli), asserting exit code 0 unless ``ok`` is false."""
    result = paywatch(args, env, process=process)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_store_and_invoice_commands(db_url: str, tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    env = {**os.environ, "PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks)}
    run(["db", "upgrade"], env, process=True)  # the operator's real process; the rest runs in-process
    created = json.loads(run(["store", "create", "shop", "--json"], env).stdout)
    assert set(created) == {"store_id", "api_key", "webhook_secret"}
    assert created["webhook_secret"].startswith("whsec_")
    table = run(["store", "create", "other"], env).stdout
    assert "api_key" in table and "webhook_secret" in table

    from paywatch.config import AppConfig, Settings, parse_networks
    from paywatch.invoices import InvoiceRequest, create_invoice
    from paywatch.store.db import make_engine, session_scope
    from paywatch.store.models import Store
    from tests.conftest import T0

    config = AppConfig(Settings(database_url=db_url), parse_networks(TEST_NETWORKS, source="t", env={}))
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        store = session.get(Store, created["store_id"])
        assert store is not None
        ids = [create_invoice(session, config, store, InvoiceRequest("ethereum", "ETH", "1"), T0).id for _ in range(2)]
    engine.dispose()

    listed = json.loads(run(["invoice", "list", "--json"], env).stdout)
    assert sorted(row["id"] for row in listed) == sorted(ids)
    table = run(["invoice", "list"], {**env, "COLUMNS": "80"}).stdout
    assert "PENDING" in table and "ETH 1" in table and ids[0] in table  # asset units, whole ids
    assert max(len(line) for line in table.splitlines()) <= 80
    wide = run(["invoice", "list", "--wide"], env).stdout
    assert all(row["address"] in wide for row in listed)  # --wide: every column, in full
    shown = json.loads(run(["invoice", "show", ids[0]], env).stdout)
    assert shown["id"] == ids[0] and shown["amount"] == "1"
    assert "CANCELLED" in run(["invoice", "cancel", ids[0]], env).stdout
    assert "COMPLETED" in run(["invoice", "mark-paid", ids[1]], env).stdout
    again = run(["invoice", "cancel", ids[1]], env, ok=False)
    assert again.returncode == 2 and "already COMPLETED" in again.stderr
    missing = run(["invoice", "show", "inv_nope"], env, ok=False, process=True)
    assert missing.returncode == 2 and "inv_nope" in missing.stderr


def test_bad_networks_file_fails_at_start_with_the_key_path(tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS.replace("decimals: 6}", "decimals: 99}", 1))
    env = {**os.environ, "PAYWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PAYWATCH_NETWORKS": str(networks)}
    result = run(["store", "create", "shop"], env, ok=False, process=True)
    assert result.returncode == 2
    assert f"{networks}: networks.ethereum.assets.USDT.decimals: expected an integer 0..77" in result.stderr


def test_private_key_in_place_of_xpub_is_refused(tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    mnemonic = " ".join(["abandon"] * 11 + ["about"])
    networks.write_text(re.sub(r'xpub: "xpub[^"]+"', f'xpub: "{mnemonic}"', TEST_NETWORKS, count=1))
    env = {**os.environ, "PAYWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PAYWATCH_NETWORKS": str(networks)}
    result = run(["store", "create", "shop"], env, ok=False, process=True)
    assert result.returncode == 2 and "mnemonic" in result.stderr and "networks.ethereum.xpub" in result.stderr
