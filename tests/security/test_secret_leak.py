"""RPC credentials never leave paywatch: not in errors, logs, /healthz, /metrics, CLI output or the database.

Each case configures an endpoint with a secret in every place a URL or an endpoint can hold one
(userinfo password, path key, query key, a header, a TronGrid key), points it at a local server
that fails in one way (and echoes what it received, as some providers do), runs a real scan step
through the worker, and searches every place a message can end up.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from paywatch.api.app import create_app
from paywatch.chains.base import ChainAdapter
from paywatch.chains.evm import EvmAdapter
from paywatch.chains.tron import TronAdapter
from paywatch.chains.tron_http import RetryPolicy
from paywatch.cli import app as cli_app
from paywatch.config import AppConfig, NetworkConfig, Settings, parse_networks
from paywatch.devnet.node import free_port
from paywatch.logs import configure
from paywatch.store.db import session_scope
from paywatch.store.models import NetworkState
from paywatch.worker import Worker
from tests.conftest import EVM_XPUB, TRON_XPUB, USDT_ETH, USDT_TRON
from tests.support.hostile_rpc import MODES, HostileRpc

pytestmark = pytest.mark.attack("secret_leak")

FAILURES = ("refused", *MODES)
NOISY = ("httpx", "httpcore", "web3", "urllib3", "requests")
#: what the recorded error says for each failure mode (proof that the mode was exercised)
EXPECTED = {
    "evm": {
        "refused": "ConnectionError",
        "http_401": "HTTP 401",
        "http_500": "HTTP 500",
        "http_429": "HTTP 429",
        "timeout": "timed out",
        "rpc_error": "JSON-RPC error -32000",
        "malformed_json": "JSONDecodeError",
    },
    "tron": {
        "refused": "ConnectError",
        "http_401": "HTTP 401",
        "http_500": "HTTP 500",
        "http_429": "HTTP 429 (rate limited)",
        "timeout": "ReadTimeout",
        "rpc_error": "node error",
        "malformed_json": "not JSON",
    },
}


@dataclass(frozen=True)
class Secrets:
    password: str
    path_key: str
    query_key: str
    header: str
    tron_key: str

    def all(self) -> list[str]:
        """The secrets, and the Basic credentials clients derive from the userinfo."""
        basic = [base64.b64encode(f"{user}:{self.password}".encode()).decode() for user in ("alice", "proxyuser")]
        return [self.password, self.path_key, self.query_key, self.header, self.tron_key, *basic]


def make_secrets() -> Secrets:
    return Secrets(*(f"{name}{secrets.token_hex(8)}" for name in ("pw", "pk", "qk", "hk", "tk")))


def secret_url(port: int, family: str, s: Secrets) -> str:
    base = "/v3" if family == "evm" else "/tron"
    return f"http://alice:{s.password}@127.0.0.1:{port}{base}/{s.path_key}?apikey={s.query_key}&x=1"


def networks_document(family: str, url: str, s: Secrets, *, proxy: str | None = None) -> dict[str, Any]:
    if family == "evm":
        body: dict[str, Any] = {
            "family": "evm",
            "chain_id": 1,
            "rpc_urls": [{"url": url, "headers": {"Authorization": f"Bearer {s.header}"}}],
            "confirmations": 3,
            "xpub": EVM_XPUB,
            "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": USDT_ETH, "decimals": 6}},
        }
    else:
        body = {
            "family": "tron",
            "rpc_urls": [{"url": url, "api_key": s.tron_key, "headers": {"X-Token": s.header}}],
            "finality": "solidified",
            "xpub": TRON_XPUB,
            "assets": {"TRX": {"native": True, "decimals": 6}, "USDT": {"contract": USDT_TRON, "decimals": 6}},
        }
    body["requests_per_second"] = 1000
    if proxy is not None:
        body["proxy"] = proxy
    return {"networks": {"leaky": body}}


def adapter_for(network: NetworkConfig) -> ChainAdapter:
    if network.family == "evm":
        return EvmAdapter(network, sleep=lambda _s: None, attempts=2, timeout=0.5)
    policy = RetryPolicy(attempts=2, backoff=0.0, timeout=0.5, max_retry_after=0.0)
    return TronAdapter(network, policy=policy, sleep=lambda _s: None)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The production log set-up (text lines), with the URL-bearing library loggers at DEBUG."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in NOISY})
    stream = io.StringIO()
    text_handler = configure(json_lines=False, level=logging.DEBUG, stream=stream)
    configure(json_lines=True, level=logging.DEBUG, stream=stream)  # replaces the root's handlers...
    root.handlers.append(text_handler)  # ...so both production formats write to one buffer
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def exception_chain(exc: BaseException) -> str:
    """Every exception in the chain (suppressed context included) and the formatted traceback."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current} {current.args!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def database_text(engine: Engine) -> str:
    """Every value of every column of every table, as text."""
    metadata = MetaData()
    metadata.reflect(engine)
    out: list[str] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                out.extend(str(value) for value in row)
    return "\n".join(out)


def assert_clean(where: str, text: str, s: Secrets) -> None:
    leaked = [secret for secret in s.all() if secret in text]
    assert not leaked, f"{where} leaks {leaked}:\n{text[:3000]}"


def run_case(
    family: str, failure: str, engine: Engine, db_url: str, tmp_path: Path, logs: io.StringIO, *, proxy: bool = False
) -> None:
    s = make_secrets()
    with HostileRpc("http_500" if failure == "refused" else failure) as server:
        port = free_port() if failure == "refused" else server.port
        url = secret_url(port, family, s)
        proxy_url = f"http://proxyuser:{s.password}@127.0.0.1:{free_port()}" if proxy else None
        document = networks_document(family, url, s, proxy=proxy_url)
        networks_file = tmp_path / "networks.yaml"
        networks_file.write_text(yaml.safe_dump(document))
        networks = parse_networks(networks_file.read_text(), source=str(networks_file), env={})
        settings = Settings(database_url=db_url, networks=networks_file, max_lag_seconds=600)
        config = AppConfig(settings=settings, networks=networks)
        adapter = adapter_for(networks["leaky"])

        # the adapter's own error, with its whole chain and traceback
        with pytest.raises(Exception) as raised:
            adapter.heights()
        assert_clean("the adapter's exception chain", exception_chain(raised.value), s)
        logging.getLogger("paywatch.test").exception("heights failed")

        # the worker's scan step: its log line and network_states.last_error
        worker = Worker(config, engine, adapters={"leaky": adapter})
        try:
            assert worker.scan("leaky") == 0
        finally:
            for scanner in worker.scanners.values():
                scanner.close()
            for lease in worker.leases.values():
                lease.release()
        with session_scope(engine) as session:
            state = session.get(NetworkState, "leaky")
            assert state is not None and state.last_error, "the failure was recorded"
            expected = {"evm": "ProxyError", "tron": "ConnectError"}[family] if proxy else EXPECTED[family][failure]
            assert expected in state.last_error, state.last_error  # the failure mode was exercised
        server.release.set()

    log_text = logs.getvalue()
    assert "scan step failed" in log_text and "heights failed" in log_text
    assert_clean("the logs", log_text, s)
    assert_clean("the database", database_text(engine), s)

    client = TestClient(create_app(config, engine=engine))
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["networks"]["leaky"]["status"] == "failing"
    assert_clean("/healthz", health.text, s)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and 'endpoint="http://127.0.0.1:' in metrics.text
    assert_clean("/metrics", metrics.text, s)

    env = {"PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks_file)}
    for args in (["status"], ["status", "--json"]):
        result = CliRunner().invoke(cli_app, args, env=env)
        assert result.exit_code == 1, (args, result.output)  # degraded: the network is failing
        assert "last error" in result.output or "last_error" in result.output
        assert_clean(f"paywatch {' '.join(args)}", result.output, s)


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("family", ["evm", "tron"])
def test_rpc_failure_leaks_no_secret(
    family: str, failure: str, engine: Engine, db_url: str, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    run_case(family, failure, engine, db_url, tmp_path, captured_logs)


@pytest.mark.parametrize("family", ["evm", "tron"])
def test_proxy_credentials_leak_nowhere(
    family: str, engine: Engine, db_url: str, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    run_case(family, "http_500", engine, db_url, tmp_path, captured_logs, proxy=True)


def test_error_stored_by_an_older_version_is_scrubbed_on_display(engine: Engine, db_url: str, tmp_path: Path) -> None:
    s = make_secrets()
    url = secret_url(free_port(), "evm", s)
    networks_file = tmp_path / "networks.yaml"
    networks_file.write_text(yaml.safe_dump(networks_document("evm", url, s)))
    networks = parse_networks(networks_file.read_text(), source=str(networks_file), env={})
    config = AppConfig(settings=Settings(database_url=db_url, networks=networks_file), networks=networks)
    raw = f"RetryableChainError: eth_blockNumber: every RPC URL failed ({url}); Bearer {s.header}"
    with session_scope(engine) as session:
        session.add(NetworkState(network="leaky", tip_height=5, cursor_height=5, last_error=raw))
    health = TestClient(create_app(config, engine=engine)).get("/healthz")
    assert_clean("/healthz", health.text, s)
    env = {"PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks_file)}
    result = CliRunner().invoke(cli_app, ["status", "--json"], env=env)
    assert_clean("paywatch status", result.output, s)
    shown = json.loads(result.output)["networks"][0]["last_error"]
    assert "every RPC URL failed (http://127.0.0.1:" in shown and "***" in shown


@pytest.mark.parametrize("failure", ["refused", "rpc_error", "http_401"])
def test_rescan_cli_output_leaks_nothing(failure: str, db_url: str, tmp_path: Path) -> None:
    s = make_secrets()
    with HostileRpc("http_500" if failure == "refused" else failure) as server:
        port = free_port() if failure == "refused" else server.port
        networks_file = tmp_path / "networks.yaml"
        networks_file.write_text(yaml.safe_dump(networks_document("evm", secret_url(port, "evm", s), s)))
        env = {"PAYWATCH_DATABASE_URL": db_url, "PAYWATCH_NETWORKS": str(networks_file)}
        result = CliRunner().invoke(cli_app, ["rescan", "leaky", "--from-block", "1", "--to-block", "2"], env=env)
    assert result.exit_code != 0 and "every RPC URL failed" in result.output
    assert_clean("paywatch rescan", result.output, s)


def test_configuration_objects_do_not_show_secrets_in_their_repr(tmp_path: Path) -> None:
    s = make_secrets()
    url = secret_url(8545, "tron", s)
    document = networks_document("tron", url, s, proxy=f"http://proxyuser:{s.password}@127.0.0.1:3128")
    network = parse_networks(yaml.safe_dump(document), source="n.yaml", env={})["leaky"]
    settings = Settings(database_url=f"postgresql://u:{s.password}@db/x", metrics_token=s.header)
    assert_clean("repr(NetworkConfig)", repr(network) + str(network) + repr(network.endpoints), s)
    assert_clean("repr(Settings)", repr(settings) + str(settings), s)
