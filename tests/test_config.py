"""networks.yaml and settings: precise errors, ${VAR} expansion, private key material refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from paywatch.config import Settings, load_config, parse_networks, raw_document
from paywatch.errors import ConfigError, KeyMaterialError
from tests.conftest import EVM_XPUB, TEST_NETWORKS, TRON_XPUB, USDT_ETH

REPO = Path(__file__).resolve().parents[1]
MNEMONIC_12 = " ".join(["abandon"] * 11 + ["about"])
MNEMONIC_24 = " ".join(["abandon"] * 23 + ["art"])
XPRV = "xprv9zDS7CJn5gZMPqKpkqcfvRPHbGnLLaKw8bATLfE2yhbAvD9vyzvW4r1wWzx1tZcQJTTNjk2eJMKNcYLWCGLWhrVRgEbTf8vxgn5J4ZoYbLY"
HEX_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(TEST_NETWORKS)
    assert isinstance(loaded, dict)
    return loaded


def parse(data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_networks(raw_document(data), source="conf/networks.yaml", env=env or {})


def test_test_networks_parse() -> None:
    nets = parse(doc())
    assert set(nets) == {"ethereum", "tron"}
    assert nets["ethereum"].confirmations_required == 3
    assert nets["tron"].confirmations_required == 0
    assert nets["tron"].assets["USDT"].decimals == 6
    assert nets["ethereum"].internal_transfers == "off"


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("networks.tron.assets.USDT.decimals", 78, "networks.tron.assets.USDT.decimals: expected an integer 0..77"),
    ("networks.tron.assets.USDT.decimals", "6", "networks.tron.assets.USDT.decimals: expected an integer 0..77"),
    ("networks.tron.assets.USDT.decimals", 6.5, "networks.tron.assets.USDT.decimals: expected an integer 0..77"),
    ("networks.tron.assets.USDT.decimals", True, "networks.tron.assets.USDT.decimals: expected an integer 0..77"),
    ("networks.tron.assets.USDT.decimals", _DELETE, "networks.tron.assets.USDT.decimals: required key is missing"),
    ("networks.tron.assets.USDT.colour", "red", "networks.tron.assets.USDT.colour: unknown key"),
    ("networks.ethereum.confirmation", 3, "networks.ethereum.confirmation: unknown key"),
    ("networks.ethereum.family", "bitcoin", "networks.ethereum.family: Input should be 'evm', 'tron' or 'utxo'"),
    ("networks.ethereum.rpc_urls", ["ftp://x"], "networks.ethereum.rpc_urls: expected an http(s) URL"),
    ("networks.ethereum.rpc_urls", [], "networks.ethereum.rpc_urls: expected at least one non-empty URL"),
    ("networks.ethereum.rpc_urls", _DELETE, "networks.ethereum.rpc_urls: required key is missing"),
    (
        "networks.ethereum.confirmations",
        0,
        "networks.ethereum.confirmations: Input should be greater than or equal to 1",
    ),
    ("networks.ethereum.chain_id", _DELETE, "networks.ethereum.chain_id: expected an integer for an evm network"),
    ("networks.ethereum.finality", "finalized", "networks.ethereum: expected either `confirmations` or `finality`"),
    ("networks.ethereum.assets.USDT.contract", "0x1234", "networks.ethereum.assets.USDT.contract: expected a evm"),
    ("networks.ethereum.deposit_address", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "networks.ethereum.deposit_address:"),
    ("networks.ethereum.xpub", "xpubNOTAKEY", "networks.ethereum.xpub: expected an account-level xpub"),
    ("networks.tron.finality", "finalized", "networks.tron.finality: `finalized` exists only on evm"),
    ("networks.tron", "just text", "networks.tron: expected a mapping"),
    (
        "networks.ethereum.internal_transfers",
        "yes",
        "networks.ethereum.internal_transfers: Input should be 'trace' or 'off'",
    ),
    ("networks.tron.internal_transfers", "trace", "networks.tron.internal_transfers: `trace` exists only on evm"),
    ("networks", ["ethereum"], "networks: expected a mapping of network names"),
]


BAD_IDS = [(f"{p} deleted" if v is _DELETE else f"{p}={v!r}")[:60] for p, v, _ in BAD]  # same on every xdist worker


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=BAD_IDS)
def test_bad_networks_file_names_file_key_and_expectation(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(_set(doc(), path, value))
    text = str(info.value)
    assert text.startswith("conf/networks.yaml: "), text
    assert message in text, text
    assert not isinstance(info.value, KeyMaterialError)


def test_native_and_contract_together_refused() -> None:
    data = _set(doc(), "networks.tron.assets.TRX", {"native": True, "contract": USDT_ETH, "decimals": 6})
    with pytest.raises(ConfigError, match=r"networks\.tron\.assets\.TRX: expected exactly one of"):
        parse(data)


def test_invalid_yaml_names_file() -> None:
    with pytest.raises(ConfigError, match=r"^x\.yaml: not valid YAML"):
        parse_networks("networks: [", source="x.yaml", env={})


def test_var_expansion_required_and_default() -> None:
    data = doc()
    data["networks"]["ethereum"]["rpc_urls"] = ["${ETH_RPC}", "${BACKUP_RPC:-https://fallback.example}"]
    data["networks"]["ethereum"]["xpub"] = "${ETH_XPUB}"
    data["networks"]["tron"]["api_key"] = "${TRONGRID_API_KEY:-}"
    nets = parse(data, env={"ETH_RPC": "https://node.example/v1/key", "ETH_XPUB": EVM_XPUB})
    assert nets["ethereum"].rpc_urls == ("https://node.example/v1/key", "https://fallback.example")
    assert nets["ethereum"].xpub == EVM_XPUB
    assert nets["tron"].api_key is None  # empty default means "not configured"
    nets = parse(data, env={"ETH_RPC": "https://a.example", "ETH_XPUB": EVM_XPUB, "BACKUP_RPC": "https://b.example"})
    assert nets["ethereum"].rpc_urls == ("https://a.example", "https://b.example")


def test_missing_var_names_it_and_the_key() -> None:
    data = doc()
    data["networks"]["ethereum"]["rpc_urls"] = ["${ETH_RPC_URL}"]
    with pytest.raises(ConfigError) as info:
        parse(data, env={})
    text = str(info.value)
    assert "conf/networks.yaml" in text
    assert "networks.ethereum.rpc_urls" in text
    assert "ETH_RPC_URL is not set" in text


def test_var_in_comment_is_not_required() -> None:
    text = TEST_NETWORKS.replace("confirmations: 3", "confirmations: 3  # or ${SOMETHING_UNSET}")
    assert parse_networks(text, source="n.yaml", env={})["ethereum"].confirmations == 3


def test_var_value_cannot_inject_yaml() -> None:
    data = doc()
    data["networks"]["ethereum"]["rpc_urls"] = ["${ETH_RPC}"]
    nets = parse(data, env={"ETH_RPC": "https://x.example/#frag\nconfirmations: 99"})
    assert nets["ethereum"].confirmations == 3


KEY_MATERIAL = [
    pytest.param(XPRV, id="xprv"),
    pytest.param(HEX_KEY, id="hex-private-key"),
    pytest.param("0x" + HEX_KEY, id="0x-hex-private-key"),
    pytest.param(int("0x" + HEX_KEY, 16), id="unquoted-0x-hex-becomes-yaml-int"),
    pytest.param(MNEMONIC_12, id="12-word-mnemonic"),
    pytest.param(MNEMONIC_24, id="24-word-mnemonic"),
    pytest.param("5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ", id="wif"),
]


@pytest.mark.parametrize("secret", KEY_MATERIAL)
@pytest.mark.parametrize("network", ["ethereum", "tron"])
def test_private_key_material_in_xpub_refused(network: str, secret: object) -> None:
    data = doc()
    data["networks"][network]["xpub"] = secret
    with pytest.raises(KeyMaterialError) as info:
        parse(data)
    text = str(info.value)
    assert text.startswith(f"conf/networks.yaml: networks.{network}.xpub: ")
    for word in str(secret).split()[:1]:
        assert word not in text  # never echo the secret back


@pytest.mark.parametrize("secret", KEY_MATERIAL[:3] + KEY_MATERIAL[4:])
def test_private_key_material_through_env_var_refused(secret: object) -> None:
    data = doc()
    data["networks"]["ethereum"]["xpub"] = "${ETH_XPUB}"
    with pytest.raises(KeyMaterialError, match=r"networks\.ethereum\.xpub"):
        parse(data, env={"ETH_XPUB": str(secret)})


def test_xpub_of_wrong_depth_refused() -> None:
    from bip_utils import Bip44, Bip44Changes

    from paywatch.keys import _COINS

    change_level = Bip44.FromExtendedKey(EVM_XPUB, _COINS["evm"]).Change(Bip44Changes.CHAIN_EXT)
    data = doc()
    data["networks"]["ethereum"]["xpub"] = change_level.PublicKey().ToExtended()
    with pytest.raises(ConfigError, match=r"networks\.ethereum\.xpub: expected an account-level xpub"):
        parse(data)


def test_load_config_reads_settings_and_file(tmp_path: Path) -> None:
    path = tmp_path / "networks.yaml"
    path.write_text(TEST_NETWORKS, encoding="utf-8")
    config = load_config(Settings(networks=path, database_url="sqlite:///x.db"))
    assert config.networks["tron"].xpub == TRON_XPUB
    with pytest.raises(ConfigError, match="cannot read the networks file"):
        load_config(Settings(networks=tmp_path / "missing.yaml"))


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings is the one place that reads PAYWATCH_*; setting the environment is its input.
    monkeypatch.setenv("PAYWATCH_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("PAYWATCH_ALLOW_PRIVATE_CALLBACKS", "1")
    settings = Settings()
    assert settings.database_url == "postgresql://db/x"
    assert settings.allow_private_callbacks is True


REAL = REPO / "networks.yaml"
EXPECTED_CONTRACTS = {
    ("ethereum", "USDT"): "0xdAC17F958D2ee523a2206206994597C13D831ec7",
    ("ethereum", "USDC"): "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    ("bsc", "USDT"): "0x55d398326f99059fF775485246999027B3197955",
    ("polygon", "USDT"): "0xc2132D05D31c914a87C6611C10748AEb04B58e8F",
    ("arbitrum", "USDT"): "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9",
    ("base", "USDC"): "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    ("tron", "USDT"): "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
}


@pytest.mark.skipif(not REAL.exists(), reason="the repository's networks.yaml is not on this branch yet")
def test_repository_networks_yaml() -> None:
    text = REAL.read_text(encoding="utf-8")
    nets = parse_networks(text, source=str(REAL), env={"ETH_XPUB": EVM_XPUB, "TRON_XPUB": TRON_XPUB})
    assert {"ethereum", "bsc", "polygon", "arbitrum", "base", "tron"} <= set(nets)
    for (network, symbol), contract in EXPECTED_CONTRACTS.items():
        asset = nets[network].assets.get(symbol)
        assert asset is not None, (network, symbol)
        assert asset.contract == contract, (network, symbol)
    chain_ids = {"ethereum": 1, "bsc": 56, "polygon": 137, "arbitrum": 42161, "base": 8453}
    for network, chain_id in chain_ids.items():
        assert nets[network].chain_id == chain_id
    assert nets["tron"].finality == "solidified"
    assert nets["ethereum"].xpub == EVM_XPUB
    # With no environment at all it still loads: every variable has a default.
    assert set(parse_networks(text, source=str(REAL), env={})) == set(nets)
