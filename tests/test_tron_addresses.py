"""Tron addresses: xpub derivation agrees with tronpy, and the hex/base58 forms convert both ways."""

from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins
from tronpy.keys import PrivateKey, to_base58check_address, to_hex_address

from paywatch.addresses import shared_address
from paywatch.chains.tron_addresses import (
    BadTronAddress,
    base58_to_account,
    base58_to_hex,
    hex_to_base58,
    log_address_to_account,
    topic_to_base58,
)
from paywatch.config import NetworkConfig
from paywatch.keys import derive_address
from tests.conftest import TRON_XPUB

# The public BIP-39 test mnemonic: test vectors only, never funds. Private keys exist only here.
MNEMONIC = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
USDT_HEX = "41a614f803b6fd780986a42c78ec9c7f77e6ded13c"


def tronpy_address(index: int) -> str:
    seed = Bip39SeedGenerator(MNEMONIC).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.TRON).Purpose().Coin().Account(0)
    key = account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(index).PrivateKey().Raw().ToBytes()
    return str(PrivateKey(key).public_key.to_base58check_address())


def test_the_test_xpub_is_the_mnemonics_account_key() -> None:
    seed = Bip39SeedGenerator(MNEMONIC).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.TRON).Purpose().Coin().Account(0)
    assert account.PublicKey().ToExtended() == TRON_XPUB


@pytest.mark.parametrize("index", [0, 1, 2, 7, 1000])
def test_xpub_derivation_matches_tronpy(index: int) -> None:
    assert derive_address(TRON_XPUB, "tron", index) == tronpy_address(index)


def test_shared_address_is_index_zero(networks: dict[str, NetworkConfig]) -> None:
    assert shared_address(networks["tron"]) == tronpy_address(0)


def test_forms_round_trip_and_agree_with_tronpy() -> None:
    assert hex_to_base58(USDT_HEX) == USDT == to_base58check_address(USDT_HEX)
    assert base58_to_hex(USDT) == USDT_HEX == to_hex_address(USDT)
    assert base58_to_account(USDT) == USDT_HEX[2:]
    assert hex_to_base58(USDT) == USDT
    for form in (USDT_HEX[2:], USDT_HEX[2:].upper(), USDT_HEX, USDT):
        assert log_address_to_account(form) == USDT_HEX[2:]
    assert topic_to_base58("0" * 24 + USDT_HEX[2:]) == USDT


@pytest.mark.parametrize(
    "bad",
    ["", "41" + "00" * 19, "42" + "00" * 20, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u", "0x" + "00" * 20, "T" * 34],
)
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(BadTronAddress):
        hex_to_base58(bad)
