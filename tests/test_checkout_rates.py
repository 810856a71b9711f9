"""Rates: three public price APIs served from recorded shapes by a local server, fixed prices, ECB crosses.

Nothing here reaches the internet: every source's base URL points at tests/support/rate_server.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from paywatch.checkout.rates import RateBook, RatesConfig, RateUnavailable
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.domain.rates import NoRateError, Quote, aggregate, cross, fiat_to_units, units_to_fiat
from tests.support.rate_server import RateServer, rate_server, recorded

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CG = "/api/v3/simple/price"
KR = "/0/public/Ticker"
CB = "/v2/exchange-rates"


@pytest.fixture
def server() -> Iterator[RateServer]:
    with rate_server() as srv:
        srv.set(CG, 200, recorded("coingecko_simple_price.json"))
        srv.set(KR, 200, recorded("kraken_ticker_ETHUSD.json"))
        srv.set(CB, 200, recorded("coinbase_exchange_rates_ETH.json"))
        yield srv


def make_book(server: RateServer, **overrides: object) -> RateBook:
    settings: dict[str, object] = {
        "base_urls": {"coingecko": server.url, "kraken": server.url, "coinbase": server.url},
        "max_age_seconds": 120,
        "fixed": {"USDT": {"USD": "1"}},
    }
    settings.update(overrides)
    config = RatesConfig.model_validate(settings)
    return RateBook(config, httpx.Client(timeout=config.timeout_seconds), EcbConverter())


def test_median_of_three_sources_exact_decimals(server: RateServer) -> None:
    book = make_book(server)
    book.refresh(["ETH"], T0)
    rate = book.current("ETH", "USD", T0)
    # coingecko 3012.45, kraken 3010.05 (last trade), coinbase 3015.215 -> median 3012.45
    assert rate.price == Decimal("3012.45") and str(rate.price) == "3012.45"
    assert rate.sources == ("coinbase", "coingecko", "kraken")


def test_one_source_down_uses_median_of_the_rest(server: RateServer) -> None:
    server.set(CG, 503, b"upstream down")
    book = make_book(server)
    book.refresh(["ETH"], T0)
    rate = book.current("ETH", "USD", T0)
    assert rate.price == (Decimal("3010.05") + Decimal("3015.215")) / 2
    assert rate.sources == ("coinbase", "kraken")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>rate limited</html>",
        b'{"result": {}}',
        b'{"error": [], "result": {"XETHZUSD": {"c": ["-1", "1"]}}}',
        b'{"error": [], "result": {"XETHZUSD": {"c": ["NaN", "1"]}}}',
        b'{"error": [], "result": {"XETHZUSD": {"c": ["abc", "1"]}}}',
        b'{"error": [], "result": {"XETHZUSD": {"c": [0, "1"]}}}',
        b'{"error": [], "result": {"A": {"c": ["1", "1"]}, "B": {"c": ["2", "1"]}}}',
        b"[]",
    ],
)
def test_garbage_from_one_source_is_ignored(server: RateServer, body: bytes) -> None:
    server.set(KR, 200, body)
    book = make_book(server)
    book.refresh(["ETH"], T0)
    rate = book.current("ETH", "USD", T0)
    assert rate.sources == ("coinbase", "coingecko")
    assert rate.price == (Decimal("3012.45") + Decimal("3015.215")) / 2


def test_all_sources_down_refuses_with_503(server: RateServer) -> None:
    for path in (CG, KR, CB):
        server.set(path, 500, b"")
    book = make_book(server)
    report = book.refresh(["ETH"], T0)
    assert isinstance(report[("ETH", "USD")], str)
    with pytest.raises(RateUnavailable, match="no rate for ETH/USD"):
        book.current("ETH", "USD", T0)


def test_unreachable_sources_count_as_down() -> None:
    with rate_server() as srv:
        url = srv.url
    config = RatesConfig.model_validate(
        {"base_urls": {"coingecko": url, "kraken": url, "coinbase": url}, "timeout_seconds": 2}
    )
    book = RateBook(config, httpx.Client(timeout=2), EcbConverter())
    book.refresh(["ETH"], T0)
    with pytest.raises(RateUnavailable):
        book.current("ETH", "USD", T0)


def test_stale_rate_is_refused_never_used(server: RateServer) -> None:
    book = make_book(server)
    book.refresh(["ETH"], T0)
    assert book.current("ETH", "USD", T0 + timedelta(seconds=120)).price == Decimal("3012.45")
    with pytest.raises(RateUnavailable, match="stale"):
        book.current("ETH", "USD", T0 + timedelta(seconds=121))
    # the sources go down: the old rate stays refused; existing locks are the caller's business
    for path in (CG, KR, CB):
        server.set(path, 500, b"")
    book.refresh(["ETH"], T0 + timedelta(seconds=180))
    with pytest.raises(RateUnavailable, match="stale"):
        book.current("ETH", "USD", T0 + timedelta(seconds=180))


def test_outlier_beyond_spread_is_dropped(server: RateServer) -> None:
    server.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "4000"}}}')
    book = make_book(server)
    book.refresh(["ETH"], T0)
    rate = book.current("ETH", "USD", T0)
    assert rate.sources == ("coingecko", "kraken")
    assert rate.price == (Decimal("3012.45") + Decimal("3010.05")) / 2


def test_sources_that_disagree_give_no_rate(server: RateServer) -> None:
    server.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "4000"}}}')
    server.set(CG, 503, b"")
    book = make_book(server)
    book.refresh(["ETH"], T0)
    with pytest.raises(RateUnavailable):
        book.current("ETH", "USD", T0)


def test_fixed_price_is_never_fetched_nor_stale(server: RateServer) -> None:
    book = make_book(server)
    book.refresh(["USDT"], T0)
    assert server.hits == []
    rate = book.current("usdt", "usd", T0 + timedelta(days=30))
    assert rate.price == Decimal(1) and rate.sources == ("fixed",)


def test_fiat_cross_through_ecb_reference_rates(server: RateServer) -> None:
    ecb = EcbConverter()
    usd_eur = ecb.per("USD", "EUR")
    assert isinstance(usd_eur, Decimal) and Decimal("0.5") < usd_eur < Decimal("1.5")
    book = make_book(server)
    book.refresh(["ETH"], T0)
    rate = book.current("ETH", "EUR", T0)
    assert rate.price == cross(Decimal("3012.45"), usd_eur)
    assert rate.sources[-1] == "ecb"
    assert book.current("USDT", "EUR", T0).price == usd_eur
    assert book.known_fiat("eur") and book.known_fiat("JPY")
    assert not book.known_fiat("XYZ")
    with pytest.raises(RateUnavailable):
        book.current("ETH", "XYZ", T0)


def test_rate_at_a_past_time_from_history(server: RateServer) -> None:
    book = make_book(server)
    book.refresh(["ETH"], T0)
    server.set(CG, 200, b'{"ethereum": {"usd": 3100}}')
    server.set(KR, 200, b'{"error": [], "result": {"XETHZUSD": {"c": ["3100", "1"]}}}')
    server.set(CB, 200, b'{"data": {"currency": "ETH", "rates": {"USD": "3100"}}}')
    book.refresh(["ETH"], T0 + timedelta(minutes=10))
    near_first = book.at("ETH", "USD", T0 + timedelta(minutes=1))
    near_second = book.at("ETH", "USD", T0 + timedelta(minutes=9))
    assert near_first is not None and near_first.price == Decimal("3012.45")
    assert near_second is not None and near_second.price == Decimal("3100")
    assert book.at("ETH", "USD", T0 + timedelta(minutes=5)) is None  # 5 min from both > max_age 2 min
    assert book.at("ETH", "USD", T0 - timedelta(hours=1)) is None


@pytest.mark.parametrize(
    ("fiat", "price", "decimals", "units"),
    [
        (Decimal("29.99"), Decimal("1"), 6, 29_990_000),
        (Decimal("29.99"), Decimal("3012.45"), 18, 9_955_351_956_049_064),  # rounded up
        (Decimal("10"), Decimal("3"), 6, 3_333_334),
        (Decimal("0.01"), Decimal("0.2431"), 6, 41_136),
    ],
)
def test_fiat_to_units_rounds_up(fiat: Decimal, price: Decimal, decimals: int, units: int) -> None:
    assert fiat_to_units(fiat, price, decimals) == units
    # converting back never gives less than asked (to the cent), never a float
    assert units_to_fiat(units, price, decimals) >= fiat - Decimal("0.01")


def test_units_to_fiat_rounds_down() -> None:
    assert units_to_fiat(3_333_334, Decimal("3"), 6) == Decimal("10.00")
    assert units_to_fiat(3_333_333, Decimal("3"), 6) == Decimal("9.99")


def test_aggregate_rejects_empty_and_mixed() -> None:
    with pytest.raises(NoRateError):
        aggregate([], max_spread=Decimal("0.02"), now=T0)
    quotes = [Quote("a", "ETH", "USD", Decimal(1), T0), Quote("b", "ETH", "EUR", Decimal(1), T0)]
    with pytest.raises(NoRateError):
        aggregate(quotes, max_spread=Decimal("0.02"), now=T0)
