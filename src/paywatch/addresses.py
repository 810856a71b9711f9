"""Deposit addresses: atomic HD index allocation, shared addresses, memos and unique amounts,
and the watch index the scanners match against."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, func, literal, or_, tuple_, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType
from sqlmodel import Session, SQLModel, col, select, update

from paywatch.chains import utxo_addresses
from paywatch.config import NetworkConfig
from paywatch.domain.matching import Strategy, Watch, WatchIndex
from paywatch.domain.status import OPEN
from paywatch.domain.transfer import address_key
from paywatch.errors import ConflictError, InputError
from paywatch.keys import derive_address
from paywatch.store.db import pool_capacity
from paywatch.store.models import AccountCounter, AddressCounter, DepositAddress, Invoice, Store, StoreAddress
from paywatch.store.types import EpochSeconds
from paywatch.store.watch import WatchMark, mark_changed

MEMO_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_AMOUNT_OFFSET = 10_000
# First key of the two-int advisory locks used here; that key space never overlaps single-bigint locks.
AMOUNT_LOCK_CLASS = 0x70_77_61  # "pwa"
#: StoreAddress.strategy of a claimed network-wide deposit_address (serves both shared strategies)
ANY_STRATEGY = "any"


def shared_address(network: NetworkConfig) -> str | None:
    """The network-wide shared address: configured, or index 0 of the xpub's external chain.

    New invoices use per-store addresses (:func:`store_shared_address`); this one stays watched for
    invoices issued on it before migration 0004 and for payers who still send to it.
    """
    if network.deposit_address:
        return network.deposit_address
    if network.xpub:
        return network_address(network, 0)
    return None


def network_address(network: NetworkConfig, index: int) -> str:
    """The receive address at ``index`` of the network's xpub, in the network's address format."""
    assert network.xpub is not None
    if network.family == "utxo":
        assert network.chain is not None and network.address_type is not None
        return utxo_addresses.derive_address(network.xpub, network.chain, network.net, network.address_type, index)
    return derive_address(network.xpub, network.family, index)


def _dialect(session: Session) -> str:
    bind = session.get_bind()
    return bind.dialect.name if isinstance(bind, Engine) else bind.engine.dialect.name


def account_key(xpub: str) -> str:
    """The key HD indexes are counted under: one counter per xpub, whichever networks use it."""
    return "xpub:" + hashlib.sha256(xpub.strip().encode()).hexdigest()[:40]


def allocate_index(session: Session, networks: Mapping[str, NetworkConfig], network: NetworkConfig) -> int:
    """Take the next HD index of ``network``'s account atomically (index 0 is kept for the shared address).

    The counter belongs to the account key, not to the network: two networks configured with the
    same xpub never issue the same index. An account's first allocation seeds its counter past
    every index issued before migration 0004 by the networks that share the xpub.

    On PostgreSQL the index is taken in a transaction of its own, committed at once (like a
    sequence): the counter's row lock is held for one statement, not until the caller's
    transaction ends, so concurrent invoice creations do not queue behind each other. An index
    whose invoice is then rolled back stays unused (a gap, like an unpaid invoice's address).
    SQLite's writers are serialised anyway; there the caller's transaction takes it.
    """
    if not network.xpub:
        raise InputError(f"network {network.name} has no xpub configured; cannot derive an address", field="network")
    account = account_key(network.xpub)
    siblings = [n.name for n in networks.values() if n.xpub and account_key(n.xpub) == account]
    if _dialect(session) != "postgresql":
        return _take_index(session.connection(), account, siblings)
    counter = _counter_engine(session)
    try:
        with counter.connect() as conn:
            return _take_index(conn, account, siblings)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    # A pooled connection that died (a PostgreSQL restart; the pool checks none before use):
    # once more on a new one. If the dead one's bump had committed, its index stays unused.
    with counter.connect() as conn:
        return _take_index(conn, account, siblings)


def _take_index(conn: Connection, account: str, siblings: list[str]) -> int:
    taken = _bump(conn, account)
    if taken is None:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        seed = insert(AccountCounter).values(account=account, next_index=_first_unused(conn, siblings))
        conn.execute(seed.on_conflict_do_nothing())
        taken = _bump(conn, account)
        assert taken is not None
    return taken - 1


#: built once: building the statement per allocation was most of its CPU
_BUMP = (
    update(AccountCounter)
    .where(col(AccountCounter.account) == bindparam("counter_account"))
    .values(next_index=col(AccountCounter.next_index) + 1)
    .returning(col(AccountCounter.next_index))
)


def _bump(conn: Connection, account: str) -> int | None:
    bumped = conn.execute(_BUMP, {"counter_account": account}).scalar_one_or_none()
    return None if bumped is None else int(bumped)


_counter_engines: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()
_counter_lock = threading.Lock()


def _counter_engine(session: Session) -> Engine:
    """A small autocommit pool beside the session's engine, for the counter statements only.

    Not the session's own pool: a request holding one of its connections would wait for a second
    one, and a full pool of such requests would wait for each other.

    It holds as many connections as the session's pool lends (the API admits no more requests
    at once, see api.db_gate), so that under load no allocation opens and closes a connection of
    its own, and it does not ping a connection before use (a round trip per allocation): a dead
    one fails the statement and :func:`allocate_index` takes another.

    Its commits do not wait for the WAL flush (``synchronous_commit=off``): the counter's row lock
    is held until the commit ends, so a flush (milliseconds of fdatasync) would serialise every
    allocation behind it. This loses nothing: the invoice that uses an index commits later, with a
    flush of the WAL up to its own commit record, which comes after the counter's. A crash can only
    lose a bump whose index no durable row uses (as a sequence's cached values are lost).
    """
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with _counter_lock:
        side = _counter_engines.get(engine)
        if side is None:
            side = create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_size=max(2, pool_capacity(engine) or 0),
                max_overflow=4,
                connect_args={"options": "-c synchronous_commit=off"},
            )
            _counter_engines[engine] = side
            event.listen(engine, "engine_disposed", lambda _engine: side.dispose())
        return side


def _first_unused(conn: Connection, networks: list[str]) -> int:
    """One past every index the given networks issued (per-network counters before 0004, and rows)."""
    queries = (
        sa_select(func.max(col(AddressCounter.next_index) - 1)).where(col(AddressCounter.network).in_(networks)),
        sa_select(func.max(col(DepositAddress.derivation_index))).where(col(DepositAddress.network).in_(networks)),
        sa_select(func.max(col(StoreAddress.derivation_index))).where(col(StoreAddress.network).in_(networks)),
    )
    highest = [conn.execute(q).scalar() for q in queries]
    return max([0, *(int(h) for h in highest if h is not None)]) + 1


def store_shared_address(
    session: Session,
    networks: Mapping[str, NetworkConfig],
    network: NetworkConfig,
    store_id: str,
    strategy: Strategy,
    now: datetime,
) -> str:
    """The store's own shared address on ``network`` for ``strategy`` (memo or amount), made on first use.

    Stores never share one: each gets its own derivation index, one address per strategy, so one
    store's unique amounts and memos can never capture another store's payments. A configured
    ``deposit_address`` serves the first store that asks (single-store setups); later stores get
    derived addresses, or a 409 when the network has no xpub.
    """
    own = session.exec(
        select(StoreAddress).where(
            StoreAddress.store_id == store_id,
            StoreAddress.network == network.name,
            col(StoreAddress.strategy).in_([strategy.value, ANY_STRATEGY]),
        )
    ).first()
    if own is not None:
        return own.address
    if network.deposit_address:
        claim = StoreAddress(
            store_id=store_id,
            network=network.name,
            strategy=ANY_STRATEGY,
            address=network.deposit_address,
            address_key=address_key(network.deposit_address),
            created_at=now,
        )
        if _insert_new(session, claim):
            mark_changed(session, network.name)  # a Core insert: the session events do not see it
        owner = session.exec(
            select(StoreAddress).where(
                StoreAddress.network == network.name, StoreAddress.address_key == claim.address_key
            )
        ).one()
        if owner.store_id == store_id:
            return owner.address
        if not network.xpub:
            raise ConflictError(
                f"the deposit_address of network {network.name} is the shared address of another store; configure "
                f"an xpub on {network.name} so that every store gets its own shared address",
                field="match",
            )
    if not network.xpub:
        raise InputError(
            f"network {network.name} has neither deposit_address nor xpub configured for the {strategy} strategy",
            field="match",
        )
    index = allocate_index(session, networks, network)
    address = network_address(network, index)
    row = StoreAddress(
        store_id=store_id,
        network=network.name,
        strategy=strategy.value,
        address=address,
        address_key=address_key(address),
        derivation_index=index,
        created_at=now,
    )
    if _insert_new(session, row):
        mark_changed(session, network.name)
        _insert_new(
            session,
            DepositAddress(
                network=network.name,
                address=address,
                address_key=row.address_key,
                derivation_index=index,
                created_at=now,
            ),
        )
        return address
    # a concurrent request of the same store made it first (this index stays unused)
    return session.exec(
        select(StoreAddress.address).where(
            StoreAddress.store_id == store_id,
            StoreAddress.network == network.name,
            StoreAddress.strategy == strategy.value,
        )
    ).one()


def _insert_new(session: Session, row: SQLModel) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if the row was new."""
    insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    table = type(row).__table__  # type: ignore[attr-defined]
    values = {c.name: getattr(row, c.name) for c in table.columns if getattr(row, c.name) is not None}
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here
    return session.connection().execute(statement).first() is not None


def check_amount_cap(session: Session, store_id: str, cap: int) -> None:
    """Refuse (409) a new unique-amount invoice when the store already has ``cap`` open ones.

    Open: PENDING, PARTIAL or WAITING_FOR_CONFIRMATIONS (closed invoices still holding their
    amount through the late window do not count). On PostgreSQL the count is serialised per store
    with a transaction-level advisory lock, so concurrent requests cannot overshoot it.
    """
    if _dialect(session) == "postgresql":
        lock = func.pg_advisory_xact_lock(AMOUNT_LOCK_CLASS, func.hashtext(f"store:{store_id}"))
        session.connection().execute(sa_select(lock))
    count = sa_select(func.count()).select_from(Invoice)
    open_ones = count.where(
        col(Invoice.store_id) == store_id,
        col(Invoice.open_amount).is_not(None),
        col(Invoice.status).in_([status.value for status in OPEN]),
    )
    held = session.connection().execute(open_ones).scalar_one()
    if held >= cap:
        raise ConflictError(
            f"this store already has {held} open unique-amount invoices (the limit is {cap}, "
            "PAYWATCH_MAX_OPEN_AMOUNT_INVOICES); use the address or memo strategy, or wait for invoices to close",
            field="match",
            code="too_many_open_amount_invoices",
        )


def new_memo() -> str:
    """A short memo that survives copy-paste and wallets that change its case or pad it.

    Upper-case letters and digits without 0, 1, I and O: matching trims and upper-cases memos
    (:func:`paywatch.domain.matching.normalize_memo`), and nothing left is read as another character.
    """
    return "".join(secrets.choice(MEMO_ALPHABET) for _ in range(10))


def unique_amount(session: Session, network: str, address: str, asset_key: str, amount: int) -> int:
    """The smallest ``amount + k`` (k >= 1) no open invoice on this shared address expects.

    On PostgreSQL the pick is serialised per (network, address, asset) with a transaction-level
    advisory lock, so concurrent requests see each other's amounts instead of all picking the same
    one and retrying (SQLite's BEGIN IMMEDIATE already serialises writers).
    """
    if _dialect(session) == "postgresql":
        key = f"{network}:{address_key(address)}:{asset_key}"
        session.connection().execute(sa_select(func.pg_advisory_xact_lock(AMOUNT_LOCK_CLASS, func.hashtext(key))))
    taken = set(
        session.exec(
            select(Invoice.open_amount).where(
                Invoice.network == network,
                Invoice.address_key == address_key(address),
                Invoice.asset_key == asset_key,
                col(Invoice.open_amount) > amount,
                col(Invoice.open_amount) <= amount + MAX_AMOUNT_OFFSET,
            )
        ).all()
    )
    for offset in range(1, MAX_AMOUNT_OFFSET + 1):
        if amount + offset not in taken:
            return amount + offset
    raise ConflictError("too many open invoices for this amount on the shared address; retry later", field="amount")


def min_amounts(network: NetworkConfig) -> dict[str, int]:
    """Each asset's smallest transfer in base units, by asset key (what matching compares)."""
    return {asset.key: asset.min_units for asset in network.assets.values()}


#: invoices read per transaction while a watch index is built (a scanner: each page its own transaction)
WATCH_PAGE = 20_000


def build_watch_index(session: Session, network: NetworkConfig) -> WatchIndex:
    """Every address paywatch issued on ``network`` plus its shared addresses, with their invoices.

    Read in ``session``, page by page; :func:`load_watch_index` reads each page in a transaction
    of its own.
    """
    return load_watch_index(lambda: nullcontext(session), network)


def load_watch_index(scope: Callable[[], AbstractContextManager[Session]], network: NetworkConfig) -> WatchIndex:
    """:func:`build_watch_index` with every page of :data:`WATCH_PAGE` invoices read in its own ``scope()``.

    Every invoice of the network is loaded, whatever its status: a payment to a closed invoice's
    target still goes to that invoice within its late window, and to the inbox (with the invoice as
    hint) after it. Rows are plain tuples, consumed page by page, so the build never holds more than
    one page besides the index itself.

    Pages follow (``created_at``, ``id``), the order invoices were written in, so that each page
    reads a stretch of the table rather than rows scattered over all of it (ids are random): once
    the table outgrows the database's cache, paging by id read every heap page many times over.
    """
    index = WatchIndex(min_amounts=min_amounts(network))
    after: tuple[Any, str] | None = None
    while True:
        with scope() as session:
            if after is None:
                add_shared_addresses(session, index, network)
            rows = watch_rows(session, network, after=after, limit=WATCH_PAGE)
        add_watch_rows(index, rows)
        if len(rows) < WATCH_PAGE:
            return index
        after = (rows[-1][-1], rows[-1][0])


def refresh_watch_index(
    session: Session, index: WatchIndex, network: NetworkConfig, *, since: WatchMark | None, addresses: bool
) -> bool:
    """Add to ``index`` the invoices stamped since watch mark ``since`` (None: none), and
    with ``addresses`` the network's store addresses again; whether anything was read.

    An invoice read again replaces its entry; a released unique amount leaves the index (see
    paywatch.store.watch for what stamps an invoice).
    """
    if addresses:
        add_shared_addresses(session, index, network)
    rows = watch_rows(session, network, since=since) if since is not None else ()
    add_watch_rows(index, rows)
    return addresses or bool(rows)


def add_shared_addresses(session: Session, index: WatchIndex, network: NetworkConfig) -> None:
    """The network's shared address and every store's own shared addresses on it."""
    shared = shared_address(network)
    if shared is not None:
        index.add_shared(shared)
    own = session.exec(
        select(StoreAddress.address, StoreAddress.strategy).where(StoreAddress.network == network.name)
    ).all()
    for address, strategy in own:
        index.add_shared(address, strategy=None if strategy == ANY_STRATEGY else Strategy(strategy))


_WATCH_COLUMNS = (
    col(Invoice.id),
    col(Invoice.match_strategy),
    col(Invoice.address),
    col(Invoice.asset_key),
    col(Invoice.memo),
    col(Invoice.open_amount),
    # the deadline as a unix time, computed by the database: no datetime is made per row
    (EpochSeconds(col(Invoice.expires_at)) + col(Store.late_window_seconds)).label("deadline"),
    # the page key, as the driver gives it (no conversion per row; bound back as it came)
    type_coerce(col(Invoice.created_at), NullType()).label("created"),
)


def watch_rows(
    session: Session,
    network: NetworkConfig,
    *,
    after: tuple[Any, str] | None = None,
    limit: int | None = None,
    since: WatchMark | None = None,
) -> Sequence[Any]:
    """What matching reads of ``network``'s invoices: ``limit`` rows in (``created_at``, ``id``)
    order from past ``after`` (the last row's ``created`` and id), or those stamped since watch
    mark ``since`` (at or above its horizon, or by a transaction pending then)."""
    query = (
        sa_select(*_WATCH_COLUMNS)
        .join(Store, col(Store.id) == col(Invoice.store_id))
        .where(col(Invoice.network) == network.name)
    )
    if since is not None:
        stamp = col(Invoice.watch_seq)
        query = query.where(
            or_(stamp >= since.horizon, stamp.in_(since.pending)) if since.pending else stamp >= since.horizon
        )
    if after is not None:
        created, invoice_id = after
        query = query.where(
            tuple_(col(Invoice.created_at), col(Invoice.id)) > tuple_(literal(created, NullType()), literal(invoice_id))
        )
    if limit is not None:
        query = query.order_by(col(Invoice.created_at), col(Invoice.id)).limit(limit)
    return session.connection().execute(query).all()


def add_watch_rows(index: WatchIndex, rows: Iterable[Any]) -> None:
    """Add :func:`watch_rows` to ``index`` (deadline: ``expires_at`` plus the store's late window)."""
    address_entry = index.add_address_entry
    for inv_id, strategy, address, asset_key, memo, open_amount, deadline, _created in rows:
        if strategy == Strategy.ADDRESS:
            address_entry(address, inv_id, asset_key, deadline)
        elif strategy == Strategy.MEMO and memo:
            index.add_memo(address, memo, Watch(inv_id, asset_key, deadline))
        elif strategy == Strategy.AMOUNT:
            if open_amount is not None:
                index.add_amount(address, Watch(inv_id, asset_key, deadline, open_amount))
            else:
                index.release_amount(inv_id)
                index.add_shared(address)
