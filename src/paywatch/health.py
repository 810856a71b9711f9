"""How far behind each network's scanner is, for /healthz, /metrics and invoice creation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from paywatch.config import AppConfig
from paywatch.errors import UnavailableError
from paywatch.store.models import NetworkState


@dataclass(frozen=True)
class NetworkLag:
    """A network's scan position against its tip. ``None`` values: never scanned."""

    network: str
    tip: int | None
    cursor: int | None
    lag_blocks: int | None
    seconds_since_scan: float | None
    last_error: str | None


def network_lags(session: Session, config: AppConfig, now: datetime) -> list[NetworkLag]:
    states = {s.network: s for s in session.exec(select(NetworkState))}
    lags = []
    for name in config.networks:
        state = states.get(name)
        if state is None:
            lags.append(NetworkLag(name, None, None, None, None, None))
            continue
        lag_blocks = (
            state.tip_height - state.cursor_height
            if state.tip_height is not None and state.cursor_height is not None
            else None
        )
        since = (now - state.last_scan_at).total_seconds() if state.last_scan_at else None
        lags.append(NetworkLag(name, state.tip_height, state.cursor_height, lag_blocks, since, state.last_error))
    return lags


def require_fresh(session: Session, config: AppConfig, network: str, now: datetime) -> None:
    """Refuse new invoices on a network whose scanner has stalled beyond the configured limit.

    A network that was never scanned is accepted: the scanner picks up its invoices at first start.
    """
    state = session.get(NetworkState, network)
    if state is None or state.last_scan_at is None:
        return
    stalled = (now - state.last_scan_at).total_seconds()
    if stalled > config.settings.max_lag_seconds:
        raise UnavailableError(
            f"network {network} has not been scanned for {int(stalled)} s "
            f"(limit {config.settings.max_lag_seconds} s); payments would not be seen in time"
        )
