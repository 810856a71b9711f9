"""The rate book: fetches every source, keeps the median per pair, and refuses stale prices.

``refresh(pairs, now)`` asks each source for each pair over the one ``httpx.Client`` it was given
and stores the aggregated rate with ``now``. ``current(asset, fiat, now)`` answers only with a rate
younger than ``max_age``: a stale or missing rate raises ``RateUnavailable`` (HTTP 503), it never
prices with old data. Prices for fiat currencies the sources are not asked about are crossed through
the fiat converter (ECB reference rates). Fixed prices from configuration never go stale.
"""

from __future__ import annotations

import copy
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from paywatch.checkout.rates.fiat import FiatConverter
from paywatch.checkout.rates.sources import SOURCE_CLASSES, Fixed, RateSource, SourceError
from paywatch.domain.rates import NoRateError, Quote, Rate, aggregate, cross
from paywatch.errors import UnavailableError

log = logging.getLogger(__name__)

Pair = tuple[str, str]
_Picker = Callable[[str, str], Rate | None]


class RateUnavailable(UnavailableError):
    """No fresh rate for a pair: new payment attempts are refused with a 503."""


class RatesConfig(BaseModel):
    """Rate settings: which sources, their base URLs, fixed prices, freshness and agreement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[str, ...] = ("coingecko", "kraken", "coinbase")
    base_urls: dict[str, str] = Field(default_factory=dict)
    fixed: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    quote_fiats: tuple[str, ...] = ("USD",)
    max_age_seconds: int = Field(default=300, gt=0)
    max_spread: Decimal = Field(default=Decimal("0.02"), gt=0, lt=1)
    refresh_seconds: int = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=5.0, gt=0)
    history_seconds: int = Field(default=7 * 86400, gt=0)

    @property
    def max_age(self) -> timedelta:
        return timedelta(seconds=self.max_age_seconds)


def build_sources(config: RatesConfig) -> list[RateSource]:
    """The configured sources, with their base URLs overridden from ``base_urls``."""
    sources: list[RateSource] = []
    for name in config.sources:
        cls = SOURCE_CLASSES.get(name)
        if cls is None:
            raise ValueError(f"rates.sources: unknown source {name!r}; expected one of {sorted(SOURCE_CLASSES)}")
        url = config.base_urls.get(name)
        sources.append(cls(base_url=url.rstrip("/")) if url else cls())
    return sources


class RateHistory(Protocol):
    """Where aggregated rates are kept: in this process (:class:`MemoryHistory`) or in the database,
    shared by every process (``paywatch.checkout.rates.stored.StoredHistory``)."""

    def add(self, rate: Rate) -> None:
        """Keep ``rate`` (and forget what is older than the history window)."""
        ...

    def latest(self, asset: str, fiat: str) -> Rate | None:
        """The newest rate of the pair, if any."""
        ...

    def nearest(self, asset: str, fiat: str, when: datetime, within: timedelta) -> Rate | None:
        """The rate nearest ``when`` if one lies within ``within`` of it."""
        ...


class MemoryHistory:
    """Rates of one process, newest last, kept for ``keep``."""

    def __init__(self, keep: timedelta) -> None:
        self.keep = keep
        self._series: dict[Pair, list[Rate]] = {}

    def add(self, rate: Rate) -> None:
        series = self._series.setdefault((rate.asset, rate.fiat), [])
        series.append(rate)
        horizon = rate.at - self.keep
        while series and series[0].at < horizon:
            series.pop(0)

    def latest(self, asset: str, fiat: str) -> Rate | None:
        series = self._series.get((asset, fiat))
        return series[-1] if series else None

    def nearest(self, asset: str, fiat: str, when: datetime, within: timedelta) -> Rate | None:
        series = self._series.get((asset, fiat), [])
        i = bisect_left([r.at for r in series], when)
        return closest([series[j] for j in (i - 1, i) if 0 <= j < len(series)], when, within)


def closest(candidates: Iterable[Rate | None], when: datetime, within: timedelta) -> Rate | None:
    """Of ``candidates``, the one nearest ``when`` if it lies within ``within`` of it."""
    near = [r for r in candidates if r is not None]
    if not near:
        return None
    best = min(near, key=lambda r: abs(r.at - when))
    return best if abs(best.at - when) <= within else None


class RateBook:
    """Fetches and aggregates rates into a :class:`RateHistory` and answers from it: the current
    rate (refused when stale) and the rate at a past time (for valuing late payments at block time)."""

    def __init__(
        self,
        config: RatesConfig,
        client: httpx.Client,
        fiat: FiatConverter,
        sources: Sequence[RateSource] | None = None,
        history: RateHistory | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.fiat = fiat
        self.sources = list(sources) if sources is not None else build_sources(config)
        self.fixed = Fixed({a.upper(): {f.upper(): p for f, p in m.items()} for a, m in config.fixed.items()})
        self.history: RateHistory = history or MemoryHistory(timedelta(seconds=config.history_seconds))

    def using(self, history: RateHistory) -> RateBook:
        """The same sources and settings over another history (the database, in one session)."""
        book = copy.copy(self)
        book.history = history
        return book

    # -- fetching -------------------------------------------------------------------------------
    def pairs(self, assets: Iterable[str]) -> list[Pair]:
        """The pairs the sources are asked for: every asset in every quote fiat, fixed ones left out."""
        wanted = sorted({a.upper() for a in assets})
        return [
            (asset, fiat.upper())
            for asset in wanted
            for fiat in self.config.quote_fiats
            if self._fixed_price(asset, fiat.upper()) is None
        ]

    def fetch(self, pairs: Iterable[Pair], now: datetime) -> dict[Pair, Rate | str]:
        """Ask every source for every pair (no history is touched); a rate or the reason per pair."""
        report: dict[Pair, Rate | str] = {}
        for pair in pairs:
            try:
                report[pair] = self._fetch(pair, now)
            except NoRateError as exc:
                log.warning("rate %s/%s: %s", pair[0], pair[1], exc)
                report[pair] = str(exc)
        return report

    def refresh(self, assets: Iterable[str], now: datetime) -> dict[Pair, Rate | str]:
        """Fetch every asset in every quote fiat; keep what aggregates; report per pair."""
        report = self.fetch(self.pairs(assets), now)
        for rate in report.values():
            if isinstance(rate, Rate):
                self.history.add(rate)
        return report

    def _fetch(self, pair: Pair, now: datetime) -> Rate:
        quotes: list[Quote] = []
        for source in self.sources:
            try:
                price = source.price(self.client, *pair)
            except SourceError as exc:
                log.info("rate source %s: %s", source.name, exc)
                continue
            quotes.append(Quote(source.name, pair[0], pair[1], price, now))
        return aggregate(quotes, max_spread=self.config.max_spread, now=now)

    # -- answering ------------------------------------------------------------------------------
    def known_fiat(self, code: str) -> bool:
        """Whether ``code`` can be priced: a quote fiat, a fixed fiat, or one the converter knows."""
        code = code.upper()
        fixed_fiats = {f for m in self.fixed.prices.values() for f in m}
        return code in self.config.quote_fiats or code in fixed_fiats or code in self.fiat.currencies()

    def current(self, asset: str, fiat: str, now: datetime) -> Rate:
        """A fresh rate for ``asset`` in ``fiat`` at ``now``, or ``RateUnavailable``."""
        asset, fiat = asset.upper(), fiat.upper()
        rate = self._lookup(asset, fiat, now, self.history.latest)
        if rate is None:
            raise RateUnavailable(f"no rate for {asset}/{fiat}; new payment attempts are refused until one is fetched")
        if rate.is_stale(now, self.config.max_age):
            raise RateUnavailable(
                f"rate for {asset}/{fiat} is stale (fetched {rate.at.isoformat()}); "
                "new payment attempts are refused until a fresh one is fetched"
            )
        return rate

    def at(self, asset: str, fiat: str, when: datetime) -> Rate | None:
        """The stored rate nearest ``when`` if one lies within ``max_age`` of it, else None."""
        asset, fiat = asset.upper(), fiat.upper()
        max_age = self.config.max_age
        return self._lookup(asset, fiat, when, lambda a, f: self.history.nearest(a, f, when, max_age))

    def _fixed_price(self, asset: str, fiat: str) -> Decimal | None:
        return self.fixed.prices.get(asset, {}).get(fiat)

    def _lookup(self, asset: str, fiat: str, when: datetime, pick: _Picker) -> Rate | None:
        fixed = self._fixed_price(asset, fiat)
        if fixed is not None:
            return Rate(asset, fiat, fixed, when, ("fixed",))
        direct = pick(asset, fiat)
        if direct is not None:
            return direct
        for fixed_fiat, price in sorted(self.fixed.prices.get(asset, {}).items()):
            return self._crossed(Rate(asset, fixed_fiat, price, when, ("fixed",)), fiat)
        for quote_fiat in self.config.quote_fiats:
            base = pick(asset, quote_fiat.upper())
            if base is not None:
                return self._crossed(base, fiat)
        return None

    def _crossed(self, base: Rate, fiat: str) -> Rate | None:
        try:
            factor = self.fiat.per(base.fiat, fiat)
        except KeyError:
            return None
        return Rate(base.asset, fiat, cross(base.price, factor), base.at, (*base.sources, "ecb"))
