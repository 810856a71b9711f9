"""The operator's status report: every network's scan, the callback queue and the open work.

Read-only; :func:`collect` gathers it in one transaction, with the lag computed by
:mod:`paywatch.health` (the same numbers as ``/healthz`` and ``/metrics``). Error texts are
scrubbed of RPC secrets (:func:`paywatch.redact.scrub`) before they leave this module, including
those stored by older versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, text
from sqlmodel import Session, col, select

from paywatch.callbacks.schedule import EventState
from paywatch.config import AppConfig
from paywatch.domain.status import OPEN
from paywatch.health import NetworkLag, network_lags, overall_status
from paywatch.lease import lock_key
from paywatch.redact import scrub
from paywatch.store.models import CallbackEvent, Invoice, NetworkState, UnmatchedTransfer
from paywatch.views import iso


@dataclass(frozen=True)
class NetworkStatus:
    """One network's line of the report."""

    network: str
    status: str
    tip: int | None
    cursor: int | None
    lag_blocks: int | None
    lag_seconds: float | None
    last_scan_at: str | None
    seconds_since_scan: float | None
    last_error: str | None
    lease_holder: str


@dataclass(frozen=True)
class QueueStatus:
    """Callback events waiting: first attempt due, retrying, dead; the oldest pending's age."""

    pending: int = 0
    retrying: int = 0
    dead: int = 0
    oldest_pending_seconds: float | None = None


@dataclass(frozen=True)
class StatusReport:
    """Everything ``paywatch status`` shows; ``status`` is ok, degraded or error."""

    status: str
    at: str
    networks: list[NetworkStatus]
    callbacks: QueueStatus
    open_invoices: dict[str, int] = field(default_factory=dict)
    unmatched_inbox: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lease_holders(session: Session, names: list[str]) -> dict[str, str]:
    """On PostgreSQL: ``pid <pid> @ <client address or host>`` of the session holding each
    network's scan lease (advisory lock); nothing elsewhere, or when nobody holds it."""
    if session.get_bind().dialect.name != "postgresql" or not names:
        return {}
    found: dict[str, str] = {}
    for name in names:
        unsigned = lock_key(f"scan:{name}") & 0xFFFFFFFFFFFFFFFF
        row = (
            session.connection()
            .execute(
                text(
                    "SELECT l.pid, host(a.client_addr), a.client_hostname FROM pg_locks l "
                    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
            )
            .first()
        )
        if row is not None:
            where = row[2] or row[1] or "local socket"
            found[name] = f"pid {row[0]} @ {where}"
    return found


def _network_status(lag: NetworkLag, state: NetworkState | None, limit: float, holder: str) -> NetworkStatus:
    return NetworkStatus(
        network=lag.network,
        status=lag.state(limit),
        tip=lag.tip,
        cursor=lag.cursor,
        lag_blocks=lag.lag_blocks,
        lag_seconds=None if lag.lag_seconds is None else round(lag.lag_seconds, 1),
        last_scan_at=iso(state.last_scan_at) if state is not None and state.last_scan_at else None,
        seconds_since_scan=None if lag.seconds_since_scan is None else round(lag.seconds_since_scan, 1),
        last_error=scrub(lag.last_error) if lag.last_error else None,
        lease_holder=holder,
    )


def _queue(session: Session, now: datetime) -> QueueStatus:
    pending, dead = EventState.PENDING.value, EventState.DEAD.value
    state, attempts = col(CallbackEvent.state), col(CallbackEvent.attempts)
    counts = session.exec(
        select(
            func.sum(case((and_(state == pending, attempts == 0), 1), else_=0)),
            func.sum(case((and_(state == pending, attempts > 0), 1), else_=0)),
            func.sum(case((state == dead, 1), else_=0)),
        ).where(state.in_([pending, dead]))
    ).one()
    oldest = session.exec(select(func.min(CallbackEvent.created_at)).where(state == pending)).one()
    age = None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 1)
    first, retrying, gone = (int(n or 0) for n in counts)
    return QueueStatus(pending=first, retrying=retrying, dead=gone, oldest_pending_seconds=age)


def collect(session: Session, config: AppConfig, now: datetime) -> StatusReport:
    """The whole report, read in ``session``."""
    limit = config.settings.max_lag_seconds
    lags = network_lags(session, config, now)
    holders = lease_holders(session, [lag.network for lag in lags])
    networks = [
        _network_status(lag, session.get(NetworkState, lag.network), limit, holders.get(lag.network, "-"))
        for lag in lags
    ]
    statuses = [str(s) for s in sorted(OPEN)]
    counts = dict(
        session.exec(
            select(Invoice.status, func.count()).where(col(Invoice.status).in_(statuses)).group_by(col(Invoice.status))
        ).all()
    )
    inbox = session.exec(
        select(func.count()).select_from(UnmatchedTransfer).where(col(UnmatchedTransfer.attached_invoice_id).is_(None))
    ).one()
    return StatusReport(
        status=overall_status(lags, limit),
        at=iso(now.replace(microsecond=0)) or "",
        networks=networks,
        callbacks=_queue(session, now),
        open_invoices={status: int(counts.get(status, 0)) for status in statuses},
        unmatched_inbox=int(inbox),
    )
