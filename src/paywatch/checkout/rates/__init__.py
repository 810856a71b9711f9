"""Exchange rates for fiat-priced invoices: public price APIs, fixed prices, ECB fiat cross rates."""

from paywatch.checkout.rates.book import RateBook, RatesConfig, RateUnavailable, build_sources
from paywatch.checkout.rates.sources import Coinbase, CoinGecko, Fixed, Kraken, RateSource, SourceError

__all__ = [
    "CoinGecko",
    "Coinbase",
    "Fixed",
    "Kraken",
    "RateBook",
    "RateSource",
    "RateUnavailable",
    "RatesConfig",
    "SourceError",
    "build_sources",
]
