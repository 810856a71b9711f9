"""Watch stamps: every commit that changes what a network's watch index holds is found by its scanner.

What the index holds of an invoice is its network, strategy, address, asset, memo, unique amount
and deadline (``expires_at`` plus its store's late window); its status does not matter (matching
routes a payment to a closed invoice by its deadline, and the ledger decides what it does to it).
So the changes are: a new invoice, a change to one of those columns (the expiry sweep releasing a
unique amount), a new store address, and a store's policy change (``*``: every network).

Session events catch the ORM writes of every path without it having to remember: invoices and
stores added or changed in a session are collected at each flush, and just before the commit the
touched invoices are stamped (``invoices.watch_seq``); on PostgreSQL a new invoice is stamped by
its INSERT (the column's default, migration 0015_apifast), without a statement of its own. Writers
that bypass the ORM (the Core inserts of store addresses) call :func:`mark_changed`. A scanner
reads a :class:`WatchMark` and later reads the invoices stamped at or above the mark's
``horizon`` it saw before.

The stamp, and so the horizon, depends on the database:

* PostgreSQL: the stamp is the writer's own transaction id (``pg_current_xact_id()``), and the
  mark is a current snapshot (``pg_current_snapshot()``): its ``xmax`` (the horizon) and the ids
  below it still running then (``pending``). Every other transaction below the horizon had ended,
  so its invoices are committed and seen by any later read; the pending ones and those at or
  above the horizon are read next time, whatever order they commit in. No row is shared by the
  writers: concurrent creations never queue on a lock. The counter rows of ``watch_versions``
  are bumped only by the rare changes that are not invoices (store addresses, and ``*``).
* SQLite (writers are serialised): the stamp is the network's counter, bumped at the commit, and
  the horizon is one past the counter a reader sees (nothing pending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Text, cast, event, func, inspect, update
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
_INVOICES = "paywatch.watch_invoices"  # network -> ids of the invoices to stamp at the commit
_BUMPS = "paywatch.watch_bumps"  # networks whose counter row is bumped at the commit
_CHUNK = 500


def _xid(expression: ColumnElement[Any]) -> ColumnElement[int]:
    """A PostgreSQL ``xid8`` as a bigint (the 64-bit, epoch-extended id: it never wraps around)."""
    return cast(cast(expression, Text), BigInteger)


#: PostgreSQL: the stamp of a change, the id of the transaction that writes it
XACT_STAMP = _xid(func.pg_current_xact_id())


@dataclass(frozen=True)
class WatchMark:
    """What a scanner saw of a network's changes: read it before the rows it covers."""

    horizon: int
    """Every invoice stamped below it, except ``pending``, is committed (or rolled back): a later
    read sees it. Invoices stamped at or above it are read next time."""
    pending: tuple[int, ...]
    """Stamps below the horizon of transactions still running then: read next time."""
    network: int
    """The network's counter (store addresses; on SQLite also invoices)."""
    every: int
    """The every-network counter (a store's late window: the index is rebuilt)."""


def mark_changed(session: Session, network: str, invoice_ids: tuple[str, ...] = ()) -> None:
    """Make ``network``'s scanners see this session's change at its commit: stamp ``invoice_ids``,
    or (none given: a store address, or ``*``) bump the network's counter."""
    if invoice_ids:
        session.info.setdefault(_INVOICES, {}).setdefault(network, set()).update(invoice_ids)
    else:
        session.info.setdefault(_BUMPS, set()).add(network)


def read_versions(session: Session, network: str) -> tuple[int, int]:
    """(``network``'s counter, the every-network counter); 0 for a row not written yet."""
    query = sa_select(col(WatchVersion.network), col(WatchVersion.version)).where(
        col(WatchVersion.network).in_([network, EVERY_NETWORK])
    )
    rows = {name: int(version) for name, version in session.execute(query).all()}
    return rows.get(network, 0), rows.get(EVERY_NETWORK, 0)


def read_mark(session: Session, network: str) -> WatchMark:
    """``network``'s :class:`WatchMark` now (two primary-key reads, and on PostgreSQL the snapshot)."""
    versions = read_versions(session, network)
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return WatchMark(versions[0] + 1, (), *versions)
    snapshot = conn.execute(sa_select(cast(func.pg_current_snapshot(), Text))).scalar_one()
    return parse_snapshot(snapshot, versions)


def parse_snapshot(snapshot: str, versions: tuple[int, int]) -> WatchMark:
    """The mark of a PostgreSQL snapshot in its text form ``xmin:xmax:xip,...``."""
    _xmin, xmax, running = snapshot.split(":")
    pending = tuple(sorted(int(xid) for xid in running.split(",") if xid))
    return WatchMark(int(xmax), pending, *versions)


def _changed(obj: Any, names: tuple[str, ...]) -> bool:
    """Whether one of ``names`` changed. An attribute set since the last flush has its old value
    in ``committed_state``: the others are not looked at (building an attribute's history costs
    about 5 us, and a scan's re-evaluations set none of the watched columns)."""
    state = inspect(obj)
    committed = state.committed_state
    return any(name in committed and state.attrs[name].history.has_changes() for name in names)


@event.listens_for(Session, "before_flush")
def _collect(session: Session, _context: Any, _instances: Any) -> None:
    stamped_by_insert = session.get_bind().dialect.name == "postgresql"  # the column's default
    for obj in session.new:
        if isinstance(obj, Invoice) and not stamped_by_insert:
            mark_changed(session, obj.network, (obj.id,))
    for obj in session.dirty:
        if isinstance(obj, Invoice) and _changed(obj, WATCHED_COLUMNS):
            mark_changed(session, obj.network, (obj.id,))
        elif isinstance(obj, Store) and _changed(obj, ("policy_version", "late_window_seconds")):
            mark_changed(session, EVERY_NETWORK)


@event.listens_for(Session, "before_commit")
def stamp_before_commit(session: Session) -> None:
    """Stamp the session's changed invoices and bump the counters it marked (run by every commit,
    as its last statements; once run, the commit finds nothing left to do)."""
    if session.in_nested_transaction():
        return
    session.flush()  # collects the last changes (the commit's own flush would come after this hook)
    invoices: dict[str, set[str]] = session.info.pop(_INVOICES, {})
    bumps: set[str] = session.info.pop(_BUMPS, set())
    if not invoices and not bumps:
        return
    conn = session.connection()
    by_xact = conn.dialect.name == "postgresql"
    if not by_xact:
        bumps |= set(invoices)
    versions = {network: _next_version(conn, network) for network in sorted(bumps)}  # one lock order
    for network in sorted(invoices):
        stamp: Any = XACT_STAMP if by_xact else versions[network]
        ids = sorted(invoices[network])
        for at in range(0, len(ids), _CHUNK):
            conn.execute(update(Invoice).where(col(Invoice.id).in_(ids[at : at + _CHUNK])).values(watch_seq=stamp))


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost one rolled back (a commit took the changes already)
        session.info.pop(_INVOICES, None)
        session.info.pop(_BUMPS, None)


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
