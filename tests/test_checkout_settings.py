"""Checkout and rate settings from PAYWATCH_* variables: parsed, checked (errors name the variable),
and used by the API (invoice_url, redirect_url rule, lock window) and the rate book."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from paywatch.checkout.context import default_checkout
from paywatch.config import AppConfig, Settings, load_config
from paywatch.errors import ConfigError
from tests.conftest import TEST_NETWORKS
from tests.support.api_helpers import make_api


def test_every_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "PAYWATCH_RATES_SOURCES": "kraken, coinbase",
        "PAYWATCH_RATES_BASE_URLS": "kraken=http://127.0.0.1:9/k,coinbase=https://proxy.example/cb",
        "PAYWATCH_RATES_QUOTE_FIATS": "usd,EUR",
        "PAYWATCH_RATES_FIXED": "USDT:USD=1, usdc:usd=1.00,DAI:EUR=0.92",
        "PAYWATCH_RATES_MAX_SPREAD": "0.05",
        "PAYWATCH_RATES_MAX_AGE_SECONDS": "600",
        "PAYWATCH_RATES_REFRESH_SECONDS": "30",
        "PAYWATCH_RATES_HISTORY_SECONDS": "86400",
        "PAYWATCH_RATES_TIMEOUT_SECONDS": "2.5",
        "PAYWATCH_CHECKOUT_LOCK_MINUTES": "20",
        "PAYWATCH_PUBLIC_URL": "https://pay.example.com/base/",
        "PAYWATCH_DEVELOPMENT": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS, encoding="utf-8")
    monkeypatch.setenv("PAYWATCH_NETWORKS", str(networks))
    checkout = default_checkout(load_config())
    rates = checkout.rates.config
    assert rates.sources == ("kraken", "coinbase") and [s.name for s in checkout.rates.sources] == [
        "kraken",
        "coinbase",
    ]
    assert checkout.rates.sources[0].base_url == "http://127.0.0.1:9/k"  # type: ignore[attr-defined]
    assert rates.quote_fiats == ("USD", "EUR")
    assert rates.fixed == {
        "USDT": {"USD": Decimal(1)},
        "USDC": {"USD": Decimal("1.00")},
        "DAI": {"EUR": Decimal("0.92")},
    }
    assert rates.max_spread == Decimal("0.05") and isinstance(rates.max_spread, Decimal)
    assert (rates.max_age_seconds, rates.refresh_seconds, rates.history_seconds) == (600, 30, 86400)
    assert rates.timeout_seconds == 2.5
    settings = checkout.settings
    assert settings.lock_window == timedelta(minutes=20)
    assert settings.public_url == "https://pay.example.com/base" and settings.development is True


def test_defaults() -> None:
    settings = Settings()
    checkout = default_checkout(AppConfig(settings=settings, networks={}))
    assert checkout.rates.config.sources == ("coingecko", "kraken", "coinbase")
    assert checkout.rates.config.fixed == {} and checkout.rates.config.quote_fiats == ("USD",)
    assert checkout.settings.lock_window == timedelta(minutes=15)
    assert checkout.settings.public_url == "http://127.0.0.1:8000" and not checkout.settings.development


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PAYWATCH_RATES_SOURCES", "coingecko,binance", "unknown source 'binance'"),
        ("PAYWATCH_RATES_BASE_URLS", "kraken", "expected source=https://host/path"),
        ("PAYWATCH_RATES_BASE_URLS", "kraken=ftp://x", "kraken: expected an http(s) URL"),
        ("PAYWATCH_RATES_BASE_URLS", "binance=https://x", "unknown source 'binance'"),
        ("PAYWATCH_RATES_QUOTE_FIATS", "US,EUR", "three-letter currency codes"),
        ("PAYWATCH_RATES_QUOTE_FIATS", "", "three-letter currency codes"),
        ("PAYWATCH_RATES_FIXED", "USDT=1", "ASSET:FIAT=PRICE"),
        ("PAYWATCH_RATES_FIXED", "USDT:USD=-1", "positive decimal price"),
        ("PAYWATCH_RATES_FIXED", "USDT:USD=NaN", "positive decimal price"),
        ("PAYWATCH_RATES_MAX_SPREAD", "1.5", "less than 1"),
        ("PAYWATCH_RATES_MAX_SPREAD", "abc", "decimal"),
        ("PAYWATCH_RATES_MAX_AGE_SECONDS", "0", "greater than 0"),
        ("PAYWATCH_RATES_REFRESH_SECONDS", "400", "below PAYWATCH_RATES_MAX_AGE_SECONDS"),
        ("PAYWATCH_RATES_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("PAYWATCH_CHECKOUT_LOCK_MINUTES", "0", "greater than or equal to 1"),
        ("PAYWATCH_PUBLIC_URL", "pay.example.com", "http(s) base URL"),
        ("PAYWATCH_PUBLIC_URL", "https://pay.example.com/?x=1", "without query"),
        ("PAYWATCH_DEVELOPMENT", "maybe", "boolean"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_config()
    text = str(caught.value)
    assert text.startswith(f"environment: {name}: ") and message in text, text


def test_public_url_lock_window_and_development_reach_the_api(engine: Engine, app_config: AppConfig) -> None:
    settings = app_config.settings.model_copy(
        update={
            "public_url": "https://pay.example.com/shop",
            "checkout_lock_minutes": 5,
            "development": True,
            "rates_fixed": {"USDT": {"USD": Decimal(1)}},
        }
    )
    api = make_api(engine, AppConfig(settings=settings, networks=app_config.networks))
    body = {"price": {"amount": "10.00", "currency": "USD"}, "currencies": ["tron:USDT"]}
    created = api.client.post(
        "/v1/invoices", json={**body, "redirect_url": "http://shop.test/back"}, headers=api.headers()
    )
    assert created.status_code == 201, created.text
    inv = created.json()
    assert inv["invoice_url"].startswith("https://pay.example.com/shop/pay/")
    paid = api.client.post(f"/v1/invoices/{inv['id']}/payments", json={"currency": "tron:USDT"}, headers=api.headers())
    assert paid.json()["payments"][0]["rate_locked_until"] == "2026-01-01T12:05:00Z"
    strict = make_api(engine, app_config, name="strict")  # development off (the default): https only
    refused = strict.client.post(
        "/v1/invoices", json={**body, "redirect_url": "http://shop.test/back"}, headers=strict.headers()
    )
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "redirect_url"
