"""What every request handler needs: config, engine, ledger and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from paywatch.api.db_gate import DbGate, gate_of
from paywatch.api.ratelimit import RateLimits
from paywatch.config import AppConfig
from paywatch.health import TipReader
from paywatch.ledger import Ledger


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AppContext:
    """Shared, read-only state of one API process."""

    config: AppConfig
    engine: Engine
    ledger: Ledger
    clock: Callable[[], datetime] = utc_now
    read_tip: TipReader = lambda _network: None
    """The chain height recorded on a new invoice of a network never scanned (see health.NodeTips)."""
    limits: RateLimits | None = None
    gate: DbGate = field(init=False)
    """Admission to database work (see api.db_gate): every route that uses the engine holds it."""

    def __post_init__(self) -> None:
        self.gate = gate_of(self.engine)

    def rate_limits(self) -> RateLimits:
        """The per-store token buckets (built from the settings on first use)."""
        if self.limits is None:
            self.limits = RateLimits.from_settings(self.config.settings)
        return self.limits
