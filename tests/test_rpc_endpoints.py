"""rpc_urls entries (a URL, or ``{url, headers, api_key}``), the TronGrid key rule, ``proxy:``,
and the one rendering of an endpoint (:mod:`paywatch.redact`)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml

from paywatch.config import TRONGRID_KEY_HEADER, parse_networks
from paywatch.errors import ConfigError
from paywatch.redact import ScrubFilter, endpoint_id, register_secrets, render_endpoint, scrub
from tests.conftest import TRON_XPUB


def tron(**body: Any) -> str:
    network = {
        "family": "tron",
        "xpub": TRON_XPUB,
        "assets": {"TRX": {"native": True, "decimals": 6}},
        **body,
    }
    return yaml.safe_dump({"networks": {"tron": network}})


def evm(**body: Any) -> str:
    network = {"family": "evm", "chain_id": 1, "assets": {"ETH": {"native": True, "decimals": 18}}, **body}
    return yaml.safe_dump({"networks": {"eth": network}})


def test_entries_mix_urls_and_mappings() -> None:
    text = tron(
        rpc_urls=[
            {"url": "https://node.example/jsonrpc", "headers": {"X-Auth": "abc123"}, "api_key": "own-key"},
            "https://api.trongrid.io",
            "https://backup.example",
        ],
        api_key="grid-key",
        proxy="http://proxy.internal:3128",
    )
    network = parse_networks(text, source="n.yaml", env={})["tron"]
    assert network.rpc_urls == ("https://node.example/jsonrpc", "https://api.trongrid.io", "https://backup.example")
    assert network.proxy == "http://proxy.internal:3128"
    assert [network.endpoint_headers(e) for e in network.endpoints] == [
        {"X-Auth": "abc123", TRONGRID_KEY_HEADER: "own-key"},
        {TRONGRID_KEY_HEADER: "grid-key"},
        {},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (tron(rpc_urls=["http://127.0.0.1:8090"], api_key="k"), "networks.tron.api_key: a network-wide api_key goes"),
        (tron(rpc_urls=[{"url": "ftp://x"}]), "networks.tron.rpc_urls.0.url: expected an http(s) URL"),
        (tron(rpc_urls=[{"headers": {}}]), "networks.tron.rpc_urls.0.url: required key is missing"),
        (tron(rpc_urls=[{"url": "http://x", "key": "k"}]), "networks.tron.rpc_urls.0.key: unknown key"),
        (
            tron(rpc_urls=["http://a", {"url": "http://x", "headers": ["k"]}]),
            "networks.tron.rpc_urls.1.headers: expected a mapping",
        ),
        (
            tron(rpc_urls=[{"url": "http://x:99999"}]),
            "networks.tron.rpc_urls.0.url: expected an http(s) URL with a valid port",
        ),
        (
            tron(rpc_urls=["http://x"], proxy="socks5://p:1080"),
            "networks.tron.proxy: expected an http:// or https:// proxy URL",
        ),
        (evm(rpc_urls=["http://x"], api_key="k"), "networks.eth.api_key: a network-wide api_key exists only on tron"),
        (evm(rpc_urls=[{"url": "http://x", "api_key": "k"}]), "networks.eth.rpc_urls.0.api_key: exists only on tron"),
        (evm(rpc_urls=["http://x"], endpoints=[]), "networks.eth.endpoints: unknown key"),
    ],
)
def test_bad_entries_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_networks(text, source="n.yaml", env={})
    assert f"n.yaml: {message}" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "rendered"),
    [
        ("https://mainnet.infura.io/v3/abcdef0123456789", "https://mainnet.infura.io:443"),
        ("http://user:pass@10.0.0.5:8545/?apikey=zz", "http://10.0.0.5:8545"),
        ("http://[::1]:8545/key", "http://[::1]:8545"),
        ("HTTPS://Node.Example", "https://node.example:443"),
        ("http://x:notaport/", "invalid-url"),
    ],
)
def test_render_endpoint_shows_scheme_host_port_and_a_stable_id(url: str, rendered: str) -> None:
    assert render_endpoint(url) == f"{rendered}#{endpoint_id(url)}"
    assert render_endpoint(url) == render_endpoint(url) and len(endpoint_id(url)) == 8


def test_two_keys_on_one_host_stay_apart() -> None:
    a, b = "https://h.example/v3/key-one-aaaa", "https://h.example/v3/key-two-bbbb"
    assert render_endpoint(a) != render_endpoint(b)


def test_scrub_masks_every_registered_part_and_the_filter_scrubs_tracebacks() -> None:
    url = "https://bob:s3cr3t-pw@rpc.example:8545/v3/PATHKEY-777?apikey=QK-888"
    register_secrets(["Bearer HK-999-token"], urls=[url])
    text = scrub(f"failed {url}; /v3/PATHKEY-777?apikey=QK-888 echo HK-999-token and s3cr3t-pw")
    assert text.startswith(f"failed {render_endpoint(url)};")
    for secret in ("PATHKEY-777", "QK-888", "HK-999-token", "s3cr3t-pw"):
        assert secret not in text
    try:
        raise RuntimeError(f"boom at {url}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "calling %s", (url,), exc_info=None)
        import sys

        record.exc_info = sys.exc_info()
    assert ScrubFilter().filter(record)
    assert "PATHKEY-777" not in record.getMessage() and record.exc_text and "PATHKEY-777" not in record.exc_text
    assert render_endpoint(url) in record.exc_text


def test_tron_urls_with_a_path_key_and_a_query_key_reach_the_api_paths() -> None:
    from paywatch.chains.tron_http import RetryPolicy, TronHttp
    from paywatch.errors import RetryableChainError
    from tests.support.hostile_rpc import HostileRpc

    with HostileRpc("rpc_error") as server:
        base = f"http://127.0.0.1:{server.port}/prefix/KEY123456789/?apikey=QK987654321"
        http = TronHttp((base,), policy=RetryPolicy(attempts=1, timeout=5), sleep=lambda _s: None)
        try:
            with pytest.raises(RetryableChainError) as raised:
                http.post("wallet/getnodeinfo")
        finally:
            http.close()
    assert [seen.path for seen in server.seen] == ["/prefix/KEY123456789/wallet/getnodeinfo?apikey=QK987654321"]
    assert render_endpoint(base) in str(raised.value)  # the configured URL's id, trailing slash and all
