"""Rate sources: one small class per public price API, all over one injected ``httpx.Client``.

Each source answers ``price(client, asset, fiat)`` with a ``Decimal`` or raises ``SourceError``.
JSON is parsed with ``parse_float=Decimal`` so no price ever passes through a float. Base URLs are
settings, so tests (and operators behind a proxy) point them at a local server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import httpx

from paywatch.domain.rates import is_sane_price


class SourceError(Exception):
    """A source could not give a usable price: down, slow, HTTP error, garbage, or pair unknown."""


class RateSource(Protocol):
    """A public price API: the price of one whole ``asset`` unit in ``fiat``."""

    name: str

    def price(self, client: httpx.Client, asset: str, fiat: str) -> Decimal:
        """Fetch one price; raise ``SourceError`` on anything but a sane positive price."""
        ...


def get_json(client: httpx.Client, url: str, params: dict[str, str]) -> Any:
    """GET ``url`` and parse its JSON body with Decimal numbers; every failure is a ``SourceError``."""
    try:
        response = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise SourceError(f"{url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise SourceError(f"{url}: HTTP {response.status_code}")
    try:
        return json.loads(response.content, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{url}: body is not JSON") from exc


def to_price(value: object, where: str) -> Decimal:
    """A sane price from a JSON number or numeric string, else ``SourceError``."""
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation as exc:
            raise SourceError(f"{where}: not a number") from exc
    if not is_sane_price(value):
        raise SourceError(f"{where}: not a positive finite number")
    assert isinstance(value, Decimal)
    return value


def dig(data: Any, *path: str | int) -> Any:
    """Walk nested dicts/lists; a missing step is a ``SourceError`` (a changed response shape)."""
    node = data
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError) as exc:
            raise SourceError(f"unexpected response shape at {step!r}") from exc
    return node


COINGECKO_IDS = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "USDT": "tether",
    "USDC": "usd-coin",
    "TRX": "tron",
    "BNB": "binancecoin",
    "POL": "polygon-ecosystem-token",
    "LTC": "litecoin",
    "DOGE": "dogecoin",
    "DAI": "dai",
}

KRAKEN_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}


@dataclass
class CoinGecko:
    """CoinGecko ``/api/v3/simple/price?ids=ethereum&vs_currencies=usd`` -> ``{"ethereum": {"usd": 3000.1}}``."""

    base_url: str = "https://api.coingecko.com"
    ids: dict[str, str] = field(default_factory=lambda: dict(COINGECKO_IDS))
    name: str = "coingecko"

    def price(self, client: httpx.Client, asset: str, fiat: str) -> Decimal:
        coin = self.ids.get(asset.upper())
        if coin is None:
            raise SourceError(f"coingecko: no id for {asset}")
        vs = fiat.lower()
        data = get_json(client, f"{self.base_url}/api/v3/simple/price", {"ids": coin, "vs_currencies": vs})
        return to_price(dig(data, coin, vs), "coingecko")


@dataclass
class Kraken:
    """Kraken ``/0/public/Ticker?pair=ETHUSD`` -> ``{"error": [], "result": {"XETHZUSD": {"c": ["3000.1", "0.5"]}}}``.

    The price is the last trade (``c[0]``). Kraken names the result pair its own way, so the single
    result entry is taken whatever its key.
    """

    base_url: str = "https://api.kraken.com"
    name: str = "kraken"

    def price(self, client: httpx.Client, asset: str, fiat: str) -> Decimal:
        pair = KRAKEN_ASSETS.get(asset.upper(), asset.upper()) + fiat.upper()
        data = get_json(client, f"{self.base_url}/0/public/Ticker", {"pair": pair})
        if dig(data, "error"):
            raise SourceError(f"kraken: {dig(data, 'error')}")
        result = dig(data, "result")
        if not isinstance(result, dict) or len(result) != 1:
            raise SourceError("kraken: expected exactly one pair in result")
        (ticker,) = result.values()
        return to_price(dig(ticker, "c", 0), "kraken")


@dataclass
class Coinbase:
    """Coinbase ``/v2/exchange-rates?currency=ETH`` -> ``{"data": {"currency": "ETH", "rates": {"USD": "3000.1"}}}``."""

    base_url: str = "https://api.coinbase.com"
    name: str = "coinbase"

    def price(self, client: httpx.Client, asset: str, fiat: str) -> Decimal:
        data = get_json(client, f"{self.base_url}/v2/exchange-rates", {"currency": asset.upper()})
        if str(dig(data, "data", "currency")).upper() != asset.upper():
            raise SourceError("coinbase: answered for another currency")
        return to_price(dig(data, "data", "rates", fiat.upper()), "coinbase")


@dataclass
class Fixed:
    """Prices from configuration, e.g. ``{"USDT": {"USD": "1"}}``; never touches the network."""

    prices: dict[str, dict[str, Decimal]]
    name: str = "fixed"

    def price(self, client: httpx.Client, asset: str, fiat: str) -> Decimal:
        value = self.prices.get(asset.upper(), {}).get(fiat.upper())
        if value is None:
            raise SourceError(f"fixed: no price for {asset}/{fiat}")
        return to_price(value, "fixed")


#: the price APIs by the name settings use (``PAYWATCH_RATES_SOURCES``)
SOURCE_CLASSES: dict[str, type[CoinGecko] | type[Kraken] | type[Coinbase]] = {
    "coingecko": CoinGecko,
    "kraken": Kraken,
    "coinbase": Coinbase,
}
