"""Watch-only extended public keys: refuse private material, derive deposit addresses.

EVM accounts are m/44'/60'/0' and Tron accounts m/44'/195'/0'; addresses come from the external
chain (``.../0/i``). Only public derivation is possible from an xpub, so nothing here can spend.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

from bip_utils import Bip44, Bip44Changes, Bip44Coins

from paywatch.errors import ConfigError, KeyMaterialError

Family = Literal["evm", "tron"]
_COINS = {"evm": Bip44Coins.ETHEREUM, "tron": Bip44Coins.TRON}
_PRIVATE_PREFIXES = (
    "xprv",
    "tprv",
    "yprv",
    "zprv",
    "uprv",
    "vprv",
    "Yprv",
    "Zprv",
    "Uprv",
    "Vprv",
    "Ltpv",
    "Mtpv",
    "dgpv",
)
_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_WIF = re.compile(r"^[5KLc9][1-9A-HJ-NP-Za-km-z]{50,51}$")


def check_watch_only_key(key: str, family: str, *, where: str = "xpub") -> None:
    """Raise KeyMaterialError for private keys or mnemonics, ConfigError for a malformed xpub."""
    text = key.strip()
    if text.startswith(_PRIVATE_PREFIXES):
        raise KeyMaterialError(f"{where}: this is an extended PRIVATE key; paywatch accepts only an xpub")
    if len(text.split()) >= 12:
        raise KeyMaterialError(f"{where}: this looks like a mnemonic; paywatch accepts only an xpub")
    if _HEX_KEY.match(text) or _WIF.match(text):
        raise KeyMaterialError(f"{where}: this looks like a private key; paywatch accepts only an xpub")
    if family == "utxo":
        return  # the account key's chain, net and script type are checked in chains.utxo_addresses
    if family not in _COINS:
        raise ConfigError(f"{where}: unknown chain family {family!r}")
    try:
        _account(text, family)
    except Exception as exc:  # bip_utils raises several unrelated types for bad input
        raise ConfigError(f"{where}: expected an account-level xpub (m/44'/coin'/0'): {exc}") from None


@lru_cache(maxsize=64)
def _account(xpub: str, family: str) -> Any:
    ctx = Bip44.FromExtendedKey(xpub, _COINS[family])
    if not ctx.IsPublicOnly():
        raise KeyMaterialError("expected a public key")
    if ctx.Level().value != 3:
        raise ConfigError(f"expected an account-level xpub (depth 3), got depth {ctx.Level().value}")
    return ctx.Change(Bip44Changes.CHAIN_EXT)


def derive_address(xpub: str, family: str, index: int) -> str:
    """The external-chain address at ``index``: EIP-55 hex for EVM, base58check for Tron."""
    if not 0 <= index < 2**31:
        raise ValueError("address index out of range")
    return str(_account(xpub, family).AddressIndex(index).PublicKey().ToAddress())
