"""The rate history in the database, shared by the worker that fetches and every API process.

The worker's scheduled refresh (:func:`refresh_stored`) fetches outside any transaction and writes
the aggregated rates in a short one; readers answer through :class:`StoredHistory` in their own
session, so after a restart a payment after its rate lock is still valued at its block time's rate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from paywatch.checkout.models import FiatInvoice, StoredRate
from paywatch.checkout.rates.book import Pair, RateBook, closest
from paywatch.config import NetworkConfig
from paywatch.domain.rates import Rate
from paywatch.store.db import session_scope

log = logging.getLogger(__name__)


def _rate(row: StoredRate) -> Rate:
    return Rate(row.asset, row.fiat, Decimal(row.price), row.fetched_at, tuple(row.sources.split(",")))


class StoredHistory:
    """A :class:`~paywatch.checkout.rates.book.RateHistory` over the ``rates`` table, in ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, rate: Rate) -> None:
        self.session.add(
            StoredRate(
                asset=rate.asset,
                fiat=rate.fiat,
                price=format(rate.price, "f"),
                sources=",".join(rate.sources)[:200],
                fetched_at=rate.at,
            )
        )

    def _one(
        self, asset: str, fiat: str, *, before: datetime | None = None, after: datetime | None = None
    ) -> Rate | None:
        query = select(StoredRate).where(StoredRate.asset == asset, StoredRate.fiat == fiat)
        if after is not None:
            query = query.where(col(StoredRate.fetched_at) >= after).order_by(col(StoredRate.fetched_at))
        else:
            if before is not None:
                query = query.where(col(StoredRate.fetched_at) <= before)
            query = query.order_by(col(StoredRate.fetched_at).desc(), col(StoredRate.id).desc())
        row = self.session.exec(query.limit(1)).first()
        return _rate(row) if row is not None else None

    def latest(self, asset: str, fiat: str) -> Rate | None:
        return self._one(asset, fiat)

    def nearest(self, asset: str, fiat: str, when: datetime, within: timedelta) -> Rate | None:
        return closest([self._one(asset, fiat, before=when), self._one(asset, fiat, after=when)], when, within)

    def prune(self, before: datetime) -> int:
        """Forget rates fetched before ``before`` (older than the history window)."""
        result = self.session.exec(delete(StoredRate).where(col(StoredRate.fetched_at) < before))
        return int(result.rowcount or 0)


def offered_assets(networks: Mapping[str, NetworkConfig]) -> list[str]:
    """Every asset symbol networks.yaml offers (the scheduled refresh fetches each of them)."""
    return sorted({symbol.upper() for network in networks.values() for symbol in network.assets})


def checkout_in_use(session: Session, now: datetime, keep: timedelta) -> bool:
    """Whether a fiat invoice is open or closed less than ``keep`` ago: only then are rates fetched,
    so an installation that never prices in fiat never calls a price API."""
    found = session.exec(select(FiatInvoice.id).where(col(FiatInvoice.expires_at) > now - keep).limit(1)).first()
    return found is not None


def due_pairs(session: Session, book: RateBook, assets: Iterable[str], now: datetime) -> list[Pair]:
    """The pairs of ``assets`` whose newest stored rate is older than ``refresh_seconds`` (or missing)."""
    every = timedelta(seconds=book.config.refresh_seconds)
    history = StoredHistory(session)
    due = []
    for asset, fiat in book.pairs(assets):
        latest = history.latest(asset, fiat)
        if latest is None or now - latest.at >= every:
            due.append((asset, fiat))
    return due


def refresh_stored(engine: Engine, book: RateBook, pairs: Iterable[Pair], now: datetime, *, prune: bool = False) -> int:
    """Fetch ``pairs`` (no database lock is held meanwhile), then store the rates in one short
    transaction; ``prune`` also forgets rates older than ``history_seconds``. Returns rates stored."""
    pairs = list(pairs)
    report = book.fetch(pairs, now) if pairs else {}
    rates = [rate for rate in report.values() if isinstance(rate, Rate)]
    with session_scope(engine) as session:
        history = StoredHistory(session)
        for rate in rates:
            history.add(rate)
        if prune:
            history.prune(now - timedelta(seconds=book.config.history_seconds))
    return len(rates)
