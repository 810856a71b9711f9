"""What checkout needs besides the API context: the rate book and the settings, built from
``PAYWATCH_RATES_*`` / ``PAYWATCH_CHECKOUT_*`` (see docs/settings.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from paywatch.checkout.rates import RateBook, RatesConfig
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.checkout.rates.stored import StoredHistory, due_pairs, refresh_stored
from paywatch.checkout.service import CheckoutSettings
from paywatch.config import AppConfig, Settings
from paywatch.store.db import session_scope


@dataclass
class Checkout:
    """Rates and settings of hosted checkout, shared by one process (API or worker).

    Rates live in the database: the worker's scheduled refresh writes them and every process reads
    them there (:meth:`reader`), so API replicas share one history that survives restarts.
    """

    rates: RateBook
    settings: CheckoutSettings = field(default_factory=CheckoutSettings)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reader(self, session: Session) -> RateBook:
        """The rate book answering from the database, in ``session``'s transaction."""
        return self.rates.using(StoredHistory(session))

    def ensure_rates(self, engine: Engine, assets: Iterable[str], now: datetime) -> None:
        """Fetch the pairs of ``assets`` whose stored rate is older than ``refresh_seconds``: the
        fallback when no worker refreshes them. Call outside any transaction (the fetch holds no
        database lock; the rates are written in a short transaction of their own)."""
        with self._lock:
            with session_scope(engine) as session:
                due = due_pairs(session, self.rates, assets, now)
            if due:
                refresh_stored(engine, self.rates, due, now)


def rates_config(settings: Settings) -> RatesConfig:
    """The rate settings of ``PAYWATCH_RATES_*``."""
    return RatesConfig(
        sources=settings.rates_sources,
        base_urls=dict(settings.rates_base_urls),
        fixed={asset: dict(prices) for asset, prices in settings.rates_fixed.items()},
        quote_fiats=settings.rates_quote_fiats,
        max_age_seconds=settings.rates_max_age_seconds,
        max_spread=settings.rates_max_spread,
        refresh_seconds=settings.rates_refresh_seconds,
        timeout_seconds=settings.rates_timeout_seconds,
        history_seconds=settings.rates_history_seconds,
    )


def checkout_settings(settings: Settings) -> CheckoutSettings:
    """The lock window, public URL and development mode of ``PAYWATCH_*``."""
    return CheckoutSettings(
        lock_window=timedelta(minutes=settings.checkout_lock_minutes),
        public_url=settings.public_url,
        development=settings.development,
    )


def default_checkout(config: AppConfig) -> Checkout:
    """Checkout as configured by the settings, over one httpx client (used when nothing is injected)."""
    rates = rates_config(config.settings)
    client = httpx.Client(timeout=rates.timeout_seconds)
    return Checkout(RateBook(rates, client, EcbConverter()), checkout_settings(config.settings))
