"""UTXO watch-only keys and config: BIP84/49/44 vectors, the node's own deriveaddresses, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bip_utils import Base58Decoder, Base58Encoder, Bip32KeyNetVersions, Bip32Slip10Secp256k1

from paywatch.addresses import network_address, shared_address
from paywatch.chains import utxo_addresses
from paywatch.config import NetworkConfig, parse_networks, raw_document
from paywatch.errors import ConfigError, KeyMaterialError
from tests.support.ltc_node import TPUB, VPUB, LtcNode

# BIP84's published test vectors ("abandon ... about"): account 0 of m/84'/0'/0'
ZPUB = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
ZPRV = "zprvAdG4iTXWBoARxkkzNpNh8r6Qag3irQB8PzEMkAFeTRXxHpbF9z4QgEvBRmfvqWvGp42t42nvgGpNgYSJA9iefm1yYNZKEm7z6qUWCroSQnE"
BIP84_RECEIVE = [
    "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu",
    "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g",
]
# BIP49's vector (testnet root of the same mnemonic): m/49'/1'/0'/0/0 is 2Mww8dCYPUpKHofjgcXcBCEGmniw9CoaiD2
BIP49_TESTNET_ROOT = (
    "tprv8ZgxMBicQKsPe5YMU9gHen4Ez3ApihUfykaqUorj9t6FDqy3nP6eoXiAo2ssvpAjoLroQxHqr3R5nE3a5dU3DHTjTgJDd7zrbniJr6nrCzd"
)
BIP49_TESTNET_0_0 = "2Mww8dCYPUpKHofjgcXcBCEGmniw9CoaiD2"


def utxo(**overrides: Any) -> NetworkConfig:
    body: dict[str, Any] = {
        "name": "btc",
        "family": "utxo",
        "chain": "bitcoin",
        "rpc_urls": ["http://127.0.0.1:8332"],
        "xpub": ZPUB,
        "assets": {"BTC": {"native": True, "decimals": 8}},
    }
    body.update(overrides)
    return NetworkConfig.model_validate(body)


def test_bip84_vectors() -> None:
    network = utxo()
    assert network.address_type == "p2wpkh"
    assert [network_address(network, i) for i in (0, 1)] == BIP84_RECEIVE
    assert shared_address(network) == BIP84_RECEIVE[0]


def test_bip49_vector_and_litecoin_forms() -> None:
    root = Bip32Slip10Secp256k1.FromExtendedKey(
        BIP49_TESTNET_ROOT, Bip32KeyNetVersions(bytes.fromhex("043587cf"), bytes.fromhex("04358394"))
    )
    tpub = root.DerivePath("m/49'/1'/0'").PublicKey().ToExtended()
    upub = Base58Encoder.CheckEncode(bytes.fromhex("044a5262") + Base58Decoder.CheckDecode(tpub)[4:])
    assert utxo_addresses.derive_address(upub, "bitcoin", "test", "p2sh-p2wpkh", 0) == BIP49_TESTNET_0_0
    assert utxo_addresses.derive_address(tpub, "bitcoin", "test", "p2sh-p2wpkh", 0) == BIP49_TESTNET_0_0
    with pytest.raises(ConfigError, match="p2sh-p2wpkh addresses"):
        utxo_addresses.check_account_key(upub, "bitcoin", "test", "p2wpkh")
    # the same key material in Litecoin and Dogecoin encodings
    assert utxo_addresses.derive_address(VPUB, "litecoin", "regtest", "p2wpkh", 0).startswith("rltc1q")
    assert utxo_addresses.derive_address(TPUB, "dogecoin", "regtest", "p2pkh", 0)[0] in "mn"


def test_private_keys_and_mismatches_are_refused() -> None:
    with pytest.raises(KeyMaterialError, match="PRIVATE"):
        utxo(xpub=ZPRV)
    with pytest.raises(KeyMaterialError):
        utxo(xpub="L1aW4aubDFB7yfras2S1mN3bqg9nwySY8nkoLmJebSLD5BWv3ENZ")  # a WIF key
    with pytest.raises(KeyMaterialError):  # a Litecoin WIF does not start like a Bitcoin one
        utxo(chain="litecoin", xpub="T35vpDzccx93D1akokpjchZHSNmjkc6A6ih3CULDHNPtCdHy43J4")
    with pytest.raises(KeyMaterialError):  # nor a Dogecoin one
        utxo(chain="dogecoin", xpub="QNeaXKWRUBeZfhLvrPifHZrWxZ9zj5D5AmUh8J6WSkq58fj1bSJE")
    with pytest.raises(ConfigError, match="does not fit `net: regtest`"):
        utxo(net="regtest")
    with pytest.raises(ConfigError, match="p2wpkh addresses, but address_type is p2pkh"):
        utxo(address_type="p2pkh")
    with pytest.raises(ValueError, match="no segwit"):
        utxo(chain="dogecoin", address_type="p2wpkh", xpub=None)


def test_networks_file_errors_name_the_key() -> None:
    base = {"family": "utxo", "rpc_urls": ["http://127.0.0.1:1"], "assets": {"BTC": {"native": True, "decimals": 8}}}
    with pytest.raises(ConfigError, match=r"networks\.btc\.chain: expected one of"):
        parse_networks(raw_document({"networks": {"btc": base}}), source="n.yaml", env={})
    with pytest.raises(KeyMaterialError, match=r"n\.yaml: networks\.btc\.xpub: this is an extended PRIVATE key"):
        parse_networks(raw_document({"networks": {"btc": {**base, "chain": "bitcoin", "xpub": ZPRV}}}), source="n.yaml")
    with pytest.raises(ConfigError, match=r"networks\.btc\.deposit_address: expected a bitcoin main address"):
        parse_networks(
            raw_document({"networks": {"btc": {**base, "chain": "bitcoin", "deposit_address": "ltc1qxyz"}}}),
            source="n.yaml",
            env={},
        )
    memo_refused = r"networks\.btc\.default_match: `memo` needs transfers that carry a memo; utxo transfers carry none"
    with pytest.raises(ConfigError, match=memo_refused):
        parse_networks(
            raw_document({"networks": {"btc": {**base, "chain": "bitcoin", "default_match": "memo"}}}),
            source="n.yaml",
            env={},
        )
    ok = parse_networks(
        raw_document({"networks": {"btc": {**base, "chain": "bitcoin", "deposit_address": BIP84_RECEIVE[1].upper()}}}),
        source="n.yaml",
        env={},
    )
    assert ok["btc"].deposit_address == BIP84_RECEIVE[1]


@pytest.mark.parametrize(
    ("address_type", "descriptor"),
    [("p2wpkh", "wpkh({key}/0/*)"), ("p2sh-p2wpkh", "sh(wpkh({key}/0/*))"), ("p2pkh", "pkh({key}/0/*)")],
)
def test_addresses_match_the_nodes_deriveaddresses(ltc_node: LtcNode, address_type: str, descriptor: str) -> None:
    """litecoind derives the same receive addresses from the same account key."""
    checked = ltc_node.rpc("getdescriptorinfo", descriptor.format(key=TPUB))["descriptor"]
    expected = ltc_node.rpc("deriveaddresses", checked, [0, 19])
    ours = [utxo_addresses.derive_address(TPUB, "litecoin", "regtest", address_type, i) for i in range(20)]
    assert ours == expected
    if address_type == "p2wpkh":
        assert [utxo_addresses.derive_address(VPUB, "litecoin", "regtest", "p2wpkh", i) for i in range(20)] == expected


def test_repository_networks_yaml_ships_btc_ltc_doge_that_load_without_environment() -> None:
    text = (Path(__file__).resolve().parent.parent / "networks.yaml").read_text(encoding="utf-8")
    nets = parse_networks(text, source="networks.yaml", env={})
    assert {n: (nets[n].chain, nets[n].net, nets[n].address_type) for n in ("bitcoin", "litecoin", "dogecoin")} == {
        "bitcoin": ("bitcoin", "main", "p2wpkh"),
        "litecoin": ("litecoin", "main", "p2wpkh"),
        "dogecoin": ("dogecoin", "main", "p2pkh"),
    }
    assert all(nets[n].xpub is None and nets[n].rpc_cookie_file is None for n in ("bitcoin", "litecoin", "dogecoin"))
    with_keys = parse_networks(text, source="networks.yaml", env={"BTC_XPUB": ZPUB, "BTC_RPC_COOKIE": "/c"})
    assert shared_address(with_keys["bitcoin"]) == BIP84_RECEIVE[0] and with_keys["bitcoin"].rpc_cookie_file == "/c"
