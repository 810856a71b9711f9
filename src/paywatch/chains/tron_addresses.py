"""Tron address forms, converted in ONE place.

A Tron account is 21 bytes: the ``0x41`` prefix and the 20-byte EVM-style account. It shows up as

* ``41`` + 40 hex digits in node answers with ``visible: false`` (``owner_address``, ``to_address``);
* 40 hex digits without the prefix in transaction-info logs (``log[].address``);
* 64 hex digits, left-padded, in event topics (``topics[1]``, ``topics[2]``);
* base58check ``T...`` (34 characters) in networks.yaml, in ``visible: true`` answers and everywhere
  paywatch stores or compares an address (``paywatch.domain.transfer.address_key`` keeps it as-is).
"""

from __future__ import annotations

from functools import lru_cache

import base58

PREFIX = b"\x41"
_HEX = frozenset("0123456789abcdefABCDEF")


class BadTronAddress(ValueError):
    """A value that is not a Tron address in any of the forms above."""


def _is_hex(text: str) -> bool:
    return all(c in _HEX for c in text)


@lru_cache(maxsize=65_536)
def account_to_base58(account_hex: str) -> str:
    """20-byte account hex (40 digits, optional ``0x``) -> base58check."""
    text = account_hex[2:] if account_hex[:2] in ("0x", "0X") else account_hex
    if len(text) != 40 or not _is_hex(text):
        raise BadTronAddress(f"expected 20 bytes of hex, got {account_hex!r}")
    return base58.b58encode_check(PREFIX + bytes.fromhex(text)).decode("ascii")


def hex_to_base58(address: str) -> str:
    """``41``-prefixed hex (42 digits) -> base58check. A base58check address is validated and returned."""
    if len(address) == 34 and address.startswith("T"):
        base58_to_hex(address)  # validates the checksum and the prefix
        return address
    if len(address) != 42 or address[:2] != "41":
        raise BadTronAddress(f"expected a 41-prefixed hex address, got {address!r}")
    return account_to_base58(address[2:])


def base58_to_hex(address: str) -> str:
    """base58check ``T...`` -> ``41``-prefixed lowercase hex (42 digits)."""
    try:
        raw = base58.b58decode_check(address)
    except ValueError as exc:
        raise BadTronAddress(f"bad base58check address {address!r}: {exc}") from None
    if len(raw) != 21 or raw[:1] != PREFIX:
        raise BadTronAddress(f"not a Tron address: {address!r}")
    return raw.hex()


def base58_to_account(address: str) -> str:
    """base58check -> the 20-byte account as 40 lowercase hex digits (the log-address form)."""
    return base58_to_hex(address)[2:]


@lru_cache(maxsize=4096)  # a handful of token contracts emit most logs
def log_address_to_account(address: str) -> str:
    """A log's contract address in any form a node uses -> 40 lowercase hex digits.

    ``visible: false`` gives 40 hex digits; ``visible: true`` rewrites it to base58check;
    some providers keep the ``41`` prefix.
    """
    if len(address) == 40 and _is_hex(address):
        return address.lower()
    if len(address) == 42 and address[:2] == "41" and _is_hex(address):
        return address[2:].lower()
    if len(address) == 34 and address.startswith("T"):
        return base58_to_account(address)
    raise BadTronAddress(f"not a log address: {address!r}")


def topic_to_base58(topic: str) -> str:
    """An indexed ``address`` event argument (32-byte topic) -> base58check."""
    if len(topic) != 64:
        raise BadTronAddress(f"expected a 32-byte topic, got {topic!r}")
    return account_to_base58(topic[24:])
