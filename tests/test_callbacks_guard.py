"""The SSRF guard at send time: every resolved address public, connect to the vetted one only."""

from __future__ import annotations

import ipaddress
import random
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from paywatch.callbacks.dispatcher import Dispatcher
from paywatch.callbacks.guard import BlockedDestinationError, vet
from paywatch.callbacks.transport import PinnedTransport
from paywatch.config import AppConfig, NetworkConfig, Settings
from tests.support.callback_receiver import (
    FakeClock,
    MappingResolver,
    Receiver,
    Reply,
    RoutedNetwork,
    attempts_of,
    events_of,
    seed_invoice,
    seed_store,
    verify,
)

ip = ipaddress.ip_address
NOBODY = MappingResolver({})

BLOCKED_LITERALS = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://10.0.0.1/hook",
    "http://10.255.255.254/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.255/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://100.127.255.254/hook",
    "http://[::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://2130706433/hook",  # decimal 127.0.0.1
    "http://0177.0.0.1/hook",  # octal 127.0.0.1
    "http://0x7f.0.0.1/hook",  # hex
    "http://0.0.0.0/hook",
    "https://[fe80::1]/hook",
]


@pytest.mark.parametrize("url", BLOCKED_LITERALS)
async def test_literal_non_public_addresses_are_blocked(url: str) -> None:
    with pytest.raises(BlockedDestinationError):
        await vet(url, NOBODY, allow_private=False)
    assert NOBODY.asked == []  # literals are judged as the address they denote, no lookup


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "x"])
async def test_bad_forms_are_blocked_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(BlockedDestinationError):
        await vet(url, NOBODY, allow_private=True)


@pytest.mark.parametrize(
    "answers",
    [
        [ip("10.0.0.5")],
        [ip("93.184.216.34"), ip("192.168.0.7")],  # one private address among public ones is enough
        [ip("::1")],
        [ip("::ffff:10.1.1.1")],
        [ip("169.254.169.254")],
        [ip("100.100.100.200")],
    ],
)
async def test_a_hostname_resolving_to_a_private_address_is_blocked(answers: list[ipaddress.IPv4Address]) -> None:
    resolver = MappingResolver({"hooks.merchant.example": list(answers)})
    with pytest.raises(BlockedDestinationError, match="resolves to"):
        await vet("https://hooks.merchant.example/cb", resolver, allow_private=False)
    assert resolver.asked == ["hooks.merchant.example"]


async def test_public_destination_is_vetted_with_all_its_addresses() -> None:
    resolver = MappingResolver({"hooks.merchant.example": [ip("93.184.216.34"), ip("2606:2800:220:1::1")]})
    dest = await vet("https://Hooks.Merchant.Example/cb?x=1", resolver, allow_private=False)
    assert dest.host == "hooks.merchant.example" and dest.port == 443
    assert dest.addresses == (ip("93.184.216.34"), ip("2606:2800:220:1::1"))
    with pytest.raises(BlockedDestinationError, match="does not resolve"):
        await vet("https://nowhere.example/cb", resolver, allow_private=False)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::8.8.8.8", "2a00:1450::1"])
async def test_public_addresses_pass_the_deny_list(address: str) -> None:
    resolver = MappingResolver({"hooks.merchant.example": [ip(address)]})
    dest = await vet("https://hooks.merchant.example/cb", resolver, allow_private=False)
    assert dest.addresses == (ip(address),)


async def test_configured_ports_are_allowed_and_allow_private_lifts_the_port_rule() -> None:
    resolver = MappingResolver({"hooks.merchant.example": [ip("93.184.216.34")]})
    dest = await vet("https://hooks.merchant.example:8443/cb", resolver, allow_private=False, ports={443, 8443})
    assert dest.port == 8443
    with pytest.raises(BlockedDestinationError, match="port 8443"):
        await vet("https://hooks.merchant.example:8443/cb", resolver, allow_private=False)
    assert (await vet("http://127.0.0.1:9/x", NOBODY, allow_private=True)).port == 9


def test_callback_ports_setting_reads_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().callback_ports == frozenset({80, 443})
    monkeypatch.setenv("PAYWATCH_CALLBACK_PORTS", "443, 8443")
    assert Settings().callback_ports == frozenset({443, 8443})
    monkeypatch.setenv("PAYWATCH_CALLBACK_PORTS", "443,http")
    with pytest.raises(ValueError, match="port numbers"):
        Settings()


async def test_allow_private_lifts_the_address_check() -> None:
    dest = await vet("http://2130706433:8080/x", NOBODY, allow_private=True)
    assert dest.addresses == (ip("127.0.0.1"),) and dest.host == "2130706433" and dest.port == 8080


def test_env_variable_sets_allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYWATCH_ALLOW_PRIVATE_CALLBACKS", raising=False)
    assert Settings().allow_private_callbacks is False
    monkeypatch.setenv("PAYWATCH_ALLOW_PRIVATE_CALLBACKS", "1")
    assert Settings().allow_private_callbacks is True


async def test_pinned_transport_refuses_unvetted_connects() -> None:
    with Receiver() as receiver:
        async with httpx.AsyncClient(transport=PinnedTransport()) as client:
            with pytest.raises(httpx.ConnectError, match="not vetted"):
                await client.post(receiver.url(), content=b"{}")
        assert receiver.received == []


@pytest.fixture
def guarded(db_url: str, networks: dict[str, NetworkConfig], tmp_path: Path) -> AppConfig:
    settings = Settings(database_url=db_url, networks=tmp_path / "n.yaml", allow_private_callbacks=False)
    return AppConfig(settings=settings, networks=networks)


async def test_dispatcher_blocks_loopback_and_logs_it(engine: Engine, guarded: AppConfig) -> None:
    with Receiver() as receiver:
        clock = FakeClock()
        store_id, _ = seed_store(engine, receiver.url(), clock())  # stores are created by admins, unchecked
        seed_invoice(engine, guarded, store_id, clock())
        d = Dispatcher(engine, guarded.settings, clock)
        assert await d.run_once() == 1
        await d.aclose()
        assert receiver.received == []
    (event,) = events_of(engine)
    assert event.state == "pending" and event.attempts == 1
    (attempt,) = attempts_of(engine, event.id or 0)
    assert attempt.status_code is None and "SSRF guard" in (attempt.error or "")


async def test_guard_on_end_to_end_redirect_to_private_and_dns_rebinding(engine: Engine, guarded: AppConfig) -> None:
    """The guard stays on: a public address is routed to the local receiver by a test network."""
    with Receiver() as receiver:
        clock = FakeClock()
        network = RoutedNetwork({"93.184.216.34": receiver.port})
        resolver = MappingResolver({"hooks.merchant.example": [ip("93.184.216.34")]})
        url = f"http://hooks.merchant.example:{receiver.port}/cb"
        store_id, secret = seed_store(engine, url, clock())
        seed_invoice(engine, guarded, store_id, clock())
        settings = guarded.settings.model_copy(update={"callback_ports": frozenset({80, 443, receiver.port})})
        receiver.plan("/cb", Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
        d = Dispatcher(
            engine,
            settings,
            clock,
            resolver=resolver,
            transport=PinnedTransport(network=network),
            rng=random.Random(1),
        )
        assert await d.run_once() == 1
        (event,) = events_of(engine)
        assert event.last_status_code == 302 and "redirect not followed" in (event.last_error or "")
        assert network.connects == [("93.184.216.34", receiver.port)]  # never the metadata address
        assert receiver.received[0].headers["host"] == f"hooks.merchant.example:{receiver.port}"
        verify(receiver.received[0], secret)

        # DNS rebinding: the name now points at loopback; the next attempt is refused before any connect
        resolver.table["hooks.merchant.example"] = [ip("127.0.0.1")]
        clock.now = event.next_attempt_at or clock.now
        assert await d.run_once() == 1
        (event,) = events_of(engine)
        assert "resolves to 127.0.0.1" in (event.last_error or "")
        assert len(network.connects) == 1 and len(receiver.received) == 1

        resolver.table["hooks.merchant.example"] = [ip("93.184.216.34")]
        clock.now = event.next_attempt_at or clock.now
        assert await d.run_once() == 1
        await d.aclose()
        assert events_of(engine)[0].state == "delivered"
        assert len(receiver.received) == 2


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_connects_to_the_vetted_ip_with_host_and_sni(
    engine: Engine, db_url: str, networks: dict[str, NetworkConfig], tmp_path: Path
) -> None:
    name = "hooks.merchant.test"
    cert, key = _self_signed(tmp_path, name)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    settings = Settings(database_url=db_url, networks=tmp_path / "n.yaml", allow_private_callbacks=True)
    config = AppConfig(settings=settings, networks=networks)
    with Receiver(tls=server_tls) as receiver:
        clock = FakeClock()
        store_id, secret = seed_store(engine, f"https://{name}:{receiver.port}/tls", clock())
        seed_invoice(engine, config, store_id, clock())
        resolver = MappingResolver({name: [ip("127.0.0.1")]})  # the name exists only in this resolver
        d = Dispatcher(engine, settings, clock, resolver=resolver, transport=PinnedTransport(verify=client_tls))
        assert await d.run_once() == 1
        await d.aclose()
        (event,) = events_of(engine)
        assert event.state == "delivered", event.last_error
        assert receiver.sni_names == [name]  # SNI is the merchant's name, and its certificate verified
        assert receiver.received[0].headers["host"] == f"{name}:{receiver.port}"
        verify(receiver.received[0], secret)
