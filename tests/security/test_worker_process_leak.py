"""A real ``paywatch worker`` process against an endpoint full of secrets that refuses connections:
its log (stderr, JSON lines) and its /metrics on PAYWATCH_METRICS_BIND carry none of them."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from paywatch.devnet.node import free_port
from paywatch.redact import render_endpoint
from tests.support.databases import fresh_sqlite_database
from tests.support.worker_procs import PaywatchProcess, network_entry, paywatch_env, wait_for, write_networks

pytestmark = pytest.mark.attack("secret_leak")

PASSWORD, PATH_KEY, QUERY_KEY, TOKEN = "pw-7f3a9c1e", "pk-5b8d2e4f6a", "qk-1c3e5a7b", "mt-9e8d7c6b5a"


def test_worker_log_and_separate_metrics_leak_nothing(tmp_path: Path) -> None:
    url = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}/v3/{PATH_KEY}?apikey={QUERY_KEY}"
    database = fresh_sqlite_database(tmp_path / "paywatch.db")
    networks = write_networks(tmp_path / "networks.yaml", {"leaky": network_entry([url], "0x" + "11" * 20, poll=0.2)})
    port = free_port()
    env = paywatch_env(database, networks, PAYWATCH_METRICS_BIND=f"127.0.0.1:{port}", PAYWATCH_METRICS_TOKEN=TOKEN)
    worker = PaywatchProcess(["worker"], env, tmp_path / "worker.log")
    metrics = f"http://127.0.0.1:{port}/metrics"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def failed_scans() -> str | None:
        try:
            reply = httpx.get(metrics, headers=auth, timeout=5)
        except httpx.HTTPError:
            return None
        found = re.search(r'paywatch_scan_errors_total\{network="leaky"\} ([0-9.]+)', reply.text)
        return reply.text if found and float(found.group(1)) >= 2 else None

    try:
        text = wait_for("two failed scan steps counted", failed_scans, timeout=60)
        assert httpx.get(metrics, timeout=5).status_code == 401
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        worker.close()
    assert f'endpoint="{render_endpoint(url)}"' in text
    log = worker.text()
    assert "scan step failed" in log and render_endpoint(url) in log
    for secret in (PASSWORD, PATH_KEY, QUERY_KEY, TOKEN):
        assert secret not in log and secret not in text, secret
