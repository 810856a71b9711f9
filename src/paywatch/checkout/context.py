"""What the checkout routes need besides the API context: the rate book and the checkout settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from paywatch.checkout.rates import RateBook, RatesConfig
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.checkout.service import CheckoutSettings
from paywatch.config import AppConfig


@dataclass
class Checkout:
    """Rates and settings of hosted checkout, shared by one API process."""

    rates: RateBook
    settings: CheckoutSettings = field(default_factory=CheckoutSettings)
    _refreshed: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure_rates(self, assets: list[str], now: datetime) -> None:
        """Refresh the rates of ``assets`` whose last fetch is older than ``refresh_seconds``."""
        every = timedelta(seconds=self.rates.config.refresh_seconds)
        with self._lock:
            due = [a for a in assets if a not in self._refreshed or now - self._refreshed[a] >= every]
            if due:
                self.rates.refresh(due, now)
                for asset in due:
                    self._refreshed[asset] = now


def default_checkout(config: AppConfig, rates: RatesConfig | None = None) -> Checkout:
    """Public price APIs with default settings over one httpx client (used when nothing is injected)."""
    rates = rates or RatesConfig()
    client = httpx.Client(timeout=rates.timeout_seconds)
    return Checkout(RateBook(rates, client, EcbConverter()))
