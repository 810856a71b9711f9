"""Watch versions: every commit that changes what a network's watch index holds bumps its counter.

What the index holds of an invoice is its network, strategy, address, asset, memo, unique amount
and deadline (``expires_at`` plus its store's late window); its status does not matter (matching
routes a payment to a closed invoice by its deadline, and the ledger decides what it does to it).
So the changes are: a new invoice, a change to one of those columns (the expiry sweep releasing a
unique amount), a new store address, and a store's policy change (``*``: every network).

Session events catch the ORM writes of every path without it having to remember: invoices and
stores added or changed in a session are collected at each flush, and just before the commit the
session bumps each touched network's row once (``UPDATE ... RETURNING``) and stamps the touched
invoices with the new version. Writers that bypass the ORM (the Core inserts of store addresses)
call :func:`mark_changed`. The row lock is taken last and held only until the commit, and it
orders the versions: a scanner that reads version ``v`` has every invoice stamped ``<= v``
committed before it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col

from paywatch.store.models import Invoice, Store, WatchVersion

#: the watch version row counted by changes that affect every network
EVERY_NETWORK = "*"
#: what matching reads of an invoice (see paywatch.addresses.build_watch_index)
WATCHED_COLUMNS = (
    "network",
    "store_id",
    "match_strategy",
    "address",
    "address_key",
    "asset_key",
    "memo",
    "open_amount",
    "expires_at",
)
_PENDING = "paywatch.watch_changes"
_CHUNK = 500


def mark_changed(session: Session, network: str, invoice_ids: tuple[str, ...] = ()) -> None:
    """Bump ``network``'s watch version at this session's commit (and stamp ``invoice_ids``)."""
    session.info.setdefault(_PENDING, {}).setdefault(network, set()).update(invoice_ids)


def read_versions(session: Session, network: str) -> tuple[int, int]:
    """(``network``'s version, the every-network version); 0 for a row not written yet."""
    query = sa_select(col(WatchVersion.network), col(WatchVersion.version)).where(
        col(WatchVersion.network).in_([network, EVERY_NETWORK])
    )
    rows = {name: int(version) for name, version in session.execute(query).all()}
    return rows.get(network, 0), rows.get(EVERY_NETWORK, 0)


def _changed(obj: Any, names: tuple[str, ...]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


@event.listens_for(Session, "before_flush")
def _collect(session: Session, _context: Any, _instances: Any) -> None:
    for obj in session.new:
        if isinstance(obj, Invoice):
            mark_changed(session, obj.network, (obj.id,))
    for obj in session.dirty:
        if isinstance(obj, Invoice) and _changed(obj, WATCHED_COLUMNS):
            mark_changed(session, obj.network, (obj.id,))
        elif isinstance(obj, Store) and _changed(obj, ("policy_version", "late_window_seconds")):
            mark_changed(session, EVERY_NETWORK)


@event.listens_for(Session, "before_commit")
def _bump(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.flush()  # collects the last changes (the commit's own flush would come after this hook)
    pending: dict[str, set[str]] = session.info.pop(_PENDING, {})
    if not pending:
        return
    conn = session.connection()
    for network in sorted(pending):  # one lock order for every writer
        version = _next_version(conn, network)
        ids = sorted(pending[network])
        for at in range(0, len(ids), _CHUNK):
            conn.execute(
                update(Invoice).where(col(Invoice.id).in_(ids[at : at + _CHUNK])).values(watch_seq=version)
            )


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost one rolled back (a commit took the changes already)
        session.info.pop(_PENDING, None)


def _next_version(conn: Connection, network: str) -> int:
    bump = (
        update(WatchVersion)
        .where(col(WatchVersion.network) == network)
        .values(version=col(WatchVersion.version) + 1)
        .returning(col(WatchVersion.version))
    )
    version = conn.execute(bump).scalar_one_or_none()
    if version is None:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(insert(WatchVersion).values(network=network, version=0).on_conflict_do_nothing())
        version = conn.execute(bump).scalar_one()
    return int(version)
