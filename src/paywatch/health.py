"""How far behind each network's scanner is, for /healthz, /metrics, ``paywatch status`` and
invoice creation (the one place the lag is computed), and the chain height recorded on a new invoice."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from paywatch.chains.base import ChainAdapter
from paywatch.chains.registry import make_adapter
from paywatch.config import AppConfig, NetworkConfig
from paywatch.errors import UnavailableError
from paywatch.store.models import NetworkState, ScannedBlock

log = logging.getLogger("paywatch.health")

TipReader = Callable[[str], "int | None"]
"""A network's current tip height, or None when it cannot be read now."""


@dataclass(frozen=True)
class NetworkLag:
    """A network's scan position against its tip. ``None`` values: never scanned."""

    network: str
    tip: int | None
    cursor: int | None
    lag_blocks: int | None
    lag_seconds: float | None
    seconds_since_scan: float | None
    last_error: str | None

    def stalled(self, limit_seconds: float) -> bool:
        """Not scanned for too long, or behind the tip by blocks older than the limit."""
        stale = self.seconds_since_scan is not None and self.seconds_since_scan > limit_seconds
        return stale or (self.lag_seconds is not None and self.lag_seconds > limit_seconds)

    def state(self, limit_seconds: float) -> str:
        """``stalled``, ``failing`` (the last scan step failed), ``unscanned`` or ``ok``."""
        if self.stalled(limit_seconds):
            return "stalled"
        if self.last_error:
            return "failing"
        return "unscanned" if self.tip is None else "ok"


#: network states that make the whole watcher ``degraded``
DEGRADED_STATES = frozenset({"stalled", "failing"})


def overall_status(lags: list[NetworkLag], limit_seconds: float) -> str:
    """``degraded`` when any network is stalled or failing, else ``ok``."""
    return "degraded" if any(lag.state(limit_seconds) in DEGRADED_STATES for lag in lags) else "ok"


def network_lag(session: Session, network: str, now: datetime) -> NetworkLag:
    """Blocks behind the tip, and how old the newest scanned block is while blocks wait behind it."""
    state = session.get(NetworkState, network)
    if state is None:
        return NetworkLag(network, None, None, None, None, None, None)
    lag_blocks = (
        max(0, state.tip_height - state.cursor_height)
        if state.tip_height is not None and state.cursor_height is not None
        else None
    )
    lag_seconds: float | None = None
    if lag_blocks == 0:
        lag_seconds = 0.0
    elif lag_blocks is not None:
        cursor_block = session.get(ScannedBlock, (network, state.cursor_height))
        if cursor_block is not None:
            lag_seconds = max(0.0, (now - cursor_block.timestamp).total_seconds())
    since = (now - state.last_scan_at).total_seconds() if state.last_scan_at else None
    return NetworkLag(network, state.tip_height, state.cursor_height, lag_blocks, lag_seconds, since, state.last_error)


def network_lags(session: Session, config: AppConfig, now: datetime) -> list[NetworkLag]:
    return [network_lag(session, name, now) for name in config.networks]


def require_fresh(session: Session, config: AppConfig, network: str, now: datetime) -> None:
    """Refuse new invoices on a network whose scanner stalled or lags beyond the configured limit.

    A network that was never scanned is accepted: the scanner picks up its invoices at first start.
    """
    if network not in config.networks:
        return  # the invoice validation names the unknown network
    lag = network_lag(session, network, now)
    limit = config.settings.max_lag_seconds
    if lag.stalled(limit):
        behind = max(lag.seconds_since_scan or 0.0, lag.lag_seconds or 0.0)
        raise UnavailableError(
            f"network {network} is {int(behind)} s behind (limit {limit} s, {lag.lag_blocks} blocks behind the tip); "
            "payments would not be seen in time"
        )


def creation_height(session: Session, network: str, read_tip: TipReader) -> int | None:
    """The chain height to record on a new invoice of ``network``.

    The tip the scanner last read when there is one (never above the real tip, so a first scan
    starting there misses nothing); else, for a network no worker has scanned yet, the node's.
    """
    state = session.get(NetworkState, network)
    if state is not None and state.tip_height is not None:
        return state.tip_height
    return read_tip(network)


class NodeTips:
    """Reads a network's tip from its node with one quick attempt; None when it cannot.

    One adapter per network, built on first use and used by one thread at a time. After a failure
    the network is not asked again for ``quiet_seconds``, so a dead node does not slow every
    invoice creation down.
    """

    def __init__(
        self,
        networks: dict[str, NetworkConfig],
        *,
        factory: Callable[[NetworkConfig], ChainAdapter] = lambda n: make_adapter(n, quick=True),
        clock: Callable[[], float] = time.monotonic,
        quiet_seconds: float = 30.0,
    ) -> None:
        self.networks = networks
        self.factory = factory
        self.clock = clock
        self.quiet_seconds = quiet_seconds
        self._adapters: dict[str, ChainAdapter] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, network: str) -> int | None:
        config = self.networks.get(network)
        if config is None:
            return None
        with self._lock:
            failed = self._failed_at.get(network)
            if failed is not None and self.clock() - failed < self.quiet_seconds:
                return None
            try:
                adapter = self._adapters.get(network) or self._adapters.setdefault(network, self.factory(config))
                tip = adapter.heights().tip
            except Exception as exc:  # recorded as unknown: the invoice is still created
                self._failed_at[network] = self.clock()
                log.warning("cannot read the tip of %s for a new invoice: %s", network, exc, extra={"network": network})
                return None
            self._failed_at.pop(network, None)
            return tip
