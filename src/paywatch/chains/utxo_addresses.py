"""Bitcoin, Litecoin and Dogecoin: watch-only account keys, receive addresses, address checks.

An account key (depth 3: m/84'/coin'/n', m/49'/..., m/44'/...) is read from its base58check
form; its four version bytes say main or test network and, for SLIP-132 keys, the script type
(``zpub``/``vpub``: P2WPKH, ``ypub``/``upub``: P2SH-P2WPKH). Receive addresses are the external
chain ``.../0/i`` only. Private material (``xprv``, ``zprv``, WIF keys, ...) is refused by its
version bytes, whatever the string looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from bip_utils import (
    Base58Decoder,
    Bip32KeyNetVersions,
    Bip32Slip10Secp256k1,
    P2PKHAddrEncoder,
    P2SHAddrEncoder,
    P2WPKHAddrEncoder,
    SegwitBech32Decoder,
)

from paywatch.errors import ConfigError, KeyMaterialError

Chain = Literal["bitcoin", "litecoin", "dogecoin"]
Net = Literal["main", "test", "regtest"]
AddressType = Literal["p2wpkh", "p2pkh", "p2sh-p2wpkh"]


@dataclass(frozen=True)
class ChainParams:
    """Address encodings and the coinbase maturity of one chain on one network."""

    hrp: str | None  # None: no segwit (Dogecoin)
    p2pkh: bytes
    p2sh: bytes
    coinbase_maturity: int
    uri_scheme: str


_PARAMS: dict[tuple[str, str], ChainParams] = {
    ("bitcoin", "main"): ChainParams("bc", b"\x00", b"\x05", 100, "bitcoin"),
    ("bitcoin", "test"): ChainParams("tb", b"\x6f", b"\xc4", 100, "bitcoin"),
    ("bitcoin", "regtest"): ChainParams("bcrt", b"\x6f", b"\xc4", 100, "bitcoin"),
    ("litecoin", "main"): ChainParams("ltc", b"\x30", b"\x32", 100, "litecoin"),
    ("litecoin", "test"): ChainParams("tltc", b"\x6f", b"\x3a", 100, "litecoin"),
    ("litecoin", "regtest"): ChainParams("rltc", b"\x6f", b"\x3a", 100, "litecoin"),
    ("dogecoin", "main"): ChainParams(None, b"\x1e", b"\x16", 240, "dogecoin"),
    ("dogecoin", "test"): ChainParams(None, b"\x71", b"\xc4", 240, "dogecoin"),
    ("dogecoin", "regtest"): ChainParams(None, b"\x6f", b"\xc4", 60, "dogecoin"),
}

#: public version bytes -> (main or test network, the script type it fixes or None for any)
_PUBLIC: dict[bytes, tuple[str, AddressType | None]] = {
    bytes.fromhex("0488b21e"): ("main", None),  # xpub
    bytes.fromhex("049d7cb2"): ("main", "p2sh-p2wpkh"),  # ypub
    bytes.fromhex("04b24746"): ("main", "p2wpkh"),  # zpub
    bytes.fromhex("043587cf"): ("test", None),  # tpub
    bytes.fromhex("044a5262"): ("test", "p2sh-p2wpkh"),  # upub
    bytes.fromhex("045f1cf6"): ("test", "p2wpkh"),  # vpub
    bytes.fromhex("019da462"): ("main", None),  # Ltub (Litecoin)
    bytes.fromhex("01b26ef6"): ("main", "p2sh-p2wpkh"),  # Mtub (Litecoin)
    bytes.fromhex("02facafd"): ("main", None),  # dgub (Dogecoin)
}
_PRIVATE = frozenset(
    bytes.fromhex(v)
    for v in (
        "0488ade4",
        "049d7878",
        "04b2430c",
        "04358394",
        "044a4e28",
        "045f18bc",
        "019d9cfe",
        "01b26792",
        "02fac398",
    )
)


def params(chain: str, net: str) -> ChainParams:
    """The encodings of ``chain`` on ``net`` (KeyError for an unknown pair)."""
    return _PARAMS[(chain, net)]


def default_address_type(chain: str) -> AddressType:
    """BIP84 P2WPKH, except on Dogecoin (no segwit): BIP44 P2PKH."""
    return "p2pkh" if chain == "dogecoin" else "p2wpkh"


def check_account_key(key: str, chain: str, net: str, address_type: str, *, where: str = "xpub") -> None:
    """Raise KeyMaterialError for private material, ConfigError for a key that does not fit."""
    _account(key.strip(), chain, net, address_type, where)


@lru_cache(maxsize=64)
def _account(key: str, chain: str, net: str, address_type: str, where: str) -> Any:
    """The external chain (``.../0``) of an account key, checked against chain, net and type."""
    try:
        raw = Base58Decoder.CheckDecode(key)
    except Exception:
        raise ConfigError(f"{where}: expected an extended public key (xpub, ypub, zpub, tpub, upub, vpub)") from None
    if len(raw) in (33, 34) and (len(raw) == 33 or raw[-1] == 1):
        raise KeyMaterialError(f"{where}: this looks like a WIF private key; paywatch accepts only an xpub")
    version = raw[:4]
    if version in _PRIVATE:
        raise KeyMaterialError(f"{where}: this is an extended PRIVATE key; paywatch accepts only an xpub")
    if len(raw) != 78 or version not in _PUBLIC:
        raise ConfigError(f"{where}: expected an extended public key (xpub, ypub, zpub, tpub, upub, vpub)")
    key_net, fixed_type = _PUBLIC[version]
    if (key_net == "main") != (net == "main"):
        raise ConfigError(f"{where}: a {key_net}net key does not fit `net: {net}`")
    if fixed_type is not None and fixed_type != address_type:
        raise ConfigError(f"{where}: this key is for {fixed_type} addresses, but address_type is {address_type}")
    node = Bip32Slip10Secp256k1.FromExtendedKey(key, Bip32KeyNetVersions(version, b"\xff\xff\xff\xff"))
    if int(node.Depth()) != 3:
        raise ConfigError(f"{where}: expected an account-level key (depth 3), got depth {int(node.Depth())}")
    if address_type != "p2pkh" and params(chain, net).hrp is None:
        raise ConfigError(f"{where}: {chain} has no segwit; use address_type p2pkh")
    return node.ChildKey(0)


def derive_address(key: str, chain: str, net: str, address_type: str, index: int) -> str:
    """The receive address at ``index`` (``.../0/index``) of the account key."""
    if not 0 <= index < 2**31:
        raise ValueError("address index out of range")
    public = _account(key.strip(), chain, net, address_type, "xpub").ChildKey(index).PublicKey().KeyObject()
    p = params(chain, net)
    if address_type == "p2wpkh":
        return str(P2WPKHAddrEncoder.EncodeKey(public, hrp=p.hrp, wit_ver=0))
    if address_type == "p2sh-p2wpkh":
        return str(P2SHAddrEncoder.EncodeKey(public, net_ver=p.p2sh))
    return str(P2PKHAddrEncoder.EncodeKey(public, net_ver=p.p2pkh))


def is_valid_address(address: str, chain: str, net: str) -> bool:
    """A segwit address with the chain's hrp, or a base58check P2PKH/P2SH address of the chain."""
    p = params(chain, net)
    if p.hrp is not None and address.lower().startswith(p.hrp + "1"):
        try:
            SegwitBech32Decoder.Decode(p.hrp, address)
        except Exception:
            return False
        return True
    try:
        raw = Base58Decoder.CheckDecode(address)
    except Exception:
        return False
    return len(raw) == 21 and raw[:1] in (p.p2pkh, p.p2sh)
