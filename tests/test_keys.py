"""Watch-only derivation: known vectors of the BIP-39 test mnemonic "abandon ... about"."""

from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins

from paywatch.errors import ConfigError, KeyMaterialError
from paywatch.keys import check_watch_only_key, derive_address
from tests.conftest import EVM_XPUB, TRON_XPUB

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])


@pytest.mark.parametrize(
    ("xpub", "family", "index", "address"),
    [
        pytest.param(EVM_XPUB, "evm", 0, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94", id="eth-0"),
        pytest.param(EVM_XPUB, "evm", 1, "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0", id="eth-1"),
        pytest.param(TRON_XPUB, "tron", 0, "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH", id="tron-0"),
        pytest.param(TRON_XPUB, "tron", 1, "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK", id="tron-1"),
    ],
)
def test_known_vectors(xpub: str, family: str, index: int, address: str) -> None:
    assert derive_address(xpub, family, index) == address


def test_xpubs_are_the_mnemonic_accounts() -> None:
    """The conftest xpubs are m/44'/60'/0' and m/44'/195'/0' of the test mnemonic (derived privately here)."""
    seed = Bip39SeedGenerator(MNEMONIC).Generate()
    for coin, xpub in ((Bip44Coins.ETHEREUM, EVM_XPUB), (Bip44Coins.TRON, TRON_XPUB)):
        account = Bip44.FromSeed(seed, coin).Purpose().Coin().Account(0)
        assert account.PublicKey().ToExtended() == xpub
        private_5 = account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(5).PublicKey().ToAddress()
        assert derive_address(xpub, "evm" if coin is Bip44Coins.ETHEREUM else "tron", 5) == private_5


def test_addresses_distinct_and_checksummed() -> None:
    evm = [derive_address(EVM_XPUB, "evm", i) for i in range(20)]
    assert len(set(evm)) == 20
    assert all(a.startswith("0x") and a != a.lower() for a in evm)
    tron = [derive_address(TRON_XPUB, "tron", i) for i in range(20)]
    assert len(set(tron)) == 20 and all(a.startswith("T") and len(a) == 34 for a in tron)


@pytest.mark.parametrize("index", [-1, 2**31], ids=["negative", "hardened-range"])
def test_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="index"):
        derive_address(EVM_XPUB, "evm", index)


def test_check_accepts_xpub_and_refuses_private_material() -> None:
    check_watch_only_key(EVM_XPUB, "evm")
    check_watch_only_key(TRON_XPUB, "tron")
    seed = Bip39SeedGenerator(MNEMONIC).Generate()
    xprv = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0).PrivateKey().ToExtended()
    for secret in (xprv, MNEMONIC, "ab" * 32, "0x" + "ab" * 32, f"  {xprv}\n"):
        with pytest.raises(KeyMaterialError):
            check_watch_only_key(secret, "evm")
    with pytest.raises(ConfigError, match="unknown chain family"):
        check_watch_only_key(EVM_XPUB, "bitcoin")
