"""Integer base units <-> decimal strings. Floats never enter."""

from __future__ import annotations

import re

from paywatch.errors import AmountError

MAX_UINT256 = 2**256 - 1
_DECIMAL = re.compile(r"^(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?$")


def parse_amount(text: object, decimals: int, *, field: str = "amount") -> int:
    """Parse a decimal string such as ``"25.5"`` into base units; reject anything inexact.

    Accepts only plain decimal notation (no sign, exponent, NaN or float values). The result is
    strictly positive and fits in 256 bits.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError(f'{field} must be a decimal string such as "25.5"', field=field)
    raw = str(text).strip()
    match = _DECIMAL.match(raw)
    if match is None and _DECIMAL.match(raw.removeprefix("-")):
        raise AmountError(f"{field} must be greater than zero", field=field)
    if match is None:
        raise AmountError(f"{field} is not a decimal number: {raw[:40]!r}", field=field)
    frac = (match.group("frac") or "").rstrip("0")
    if len(frac) > decimals:
        raise AmountError(f"{field} has {len(frac)} decimal places; this asset allows at most {decimals}", field=field)
    whole = match.group("int").lstrip("0") or "0"
    if len(whole) > len(str(MAX_UINT256)):  # also keeps int() below Python's 4300-digit conversion limit
        raise AmountError(f"{field} is too large", field=field)
    units: int = int(whole) * 10**decimals + (int(frac.ljust(decimals, "0")) if frac else 0)
    if units <= 0:
        raise AmountError(f"{field} must be greater than zero", field=field)
    if units > MAX_UINT256:
        raise AmountError(f"{field} is too large", field=field)
    return units


def format_amount(units: int, decimals: int) -> str:
    """Format base units as the shortest exact decimal string (``25500000, 6 -> "25.5"``)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if decimals == 0 or frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"
