"""SQLModel tables. Amounts are integers in base units; datetimes are aware UTC."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    FetchedValue,
    Index,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    or_,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, col, select

from paywatch.domain.status import InvoiceStatus
from paywatch.domain.transfer import Transfer
from paywatch.store.types import Amount, UTCDateTime


def _amount(**kw: Any) -> Any:
    return Field(sa_type=Amount, **kw)


def _when(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


class Store(SQLModel, table=True):
    """A merchant: API key (hashed), webhook secrets and payment policy."""

    __tablename__ = "stores"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    api_key_hash: str = Field(unique=True, max_length=64)
    webhook_secret: str = Field(max_length=200)
    webhook_secret_previous: str | None = Field(default=None, max_length=200)
    webhook_secret_previous_until: datetime | None = _when(default=None)
    callback_url: str | None = Field(default=None, max_length=2048)
    callbacks_disabled_at: datetime | None = _when(default=None)
    underpaid_tolerance: str = Field(default="0", max_length=20)
    accept_late_payments: bool = False
    late_window_seconds: int = 7 * 24 * 3600
    policy_version: int = 0  # bumped by every policy change, so scanners notice it without a restart
    accept_replaceable_mempool: bool = True  # count RBF-signalling mempool payments as seen
    created_at: datetime = _when()


class Invoice(SQLModel, table=True):
    """One invoice and its current state. ``open_amount`` reserves a unique amount while open."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("network", "address_key", "memo", name="uq_invoice_memo"),
        UniqueConstraint("network", "address_key", "asset_key", "open_amount", name="uq_invoice_open_amount"),
        Index("ix_invoice_store_created", "store_id", "created_at", "id"),
        Index("ix_invoice_status_expires", "status", "expires_at"),
        Index("ix_invoice_network_created_id", "network", "created_at", "id"),
        Index("ix_invoice_network_watch_seq", "network", "watch_seq"),
        Index("ix_invoice_network_open_amount", "network", "open_amount"),
        Index("ix_invoice_store_open_amount", "store_id", "open_amount"),
    )

    id: str = Field(primary_key=True, max_length=40)
    store_id: str = Field(foreign_key="stores.id", index=True, max_length=40)
    network: str = Field(max_length=40)
    asset: str = Field(max_length=20)
    asset_key: str = Field(max_length=64)
    decimals: int
    amount: int = _amount()
    match_strategy: str = Field(max_length=10)
    address: str = Field(max_length=64)
    address_key: str = Field(max_length=64, index=True)
    address_index: int | None = None
    memo: str | None = Field(default=None, max_length=64)
    open_amount: int | None = _amount(default=None)
    confirmations_required: int
    status: str = Field(max_length=32)
    status_version: int = 0
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    amount_paid: int = _amount(default=0)
    amount_confirmed: int = _amount(default=0)
    expires_at: datetime = _when()
    created_at: datetime = _when()
    # the chain height when the invoice was created (None: unknown); a first scan starts no higher
    created_height: int | None = Field(default=None, sa_type=BigInteger)
    #: the stamp of the last change to what matching sees of this invoice (NULL before 0011): on
    #: PostgreSQL the writing transaction's id (the column's default, migration 0015_apifast), on SQLite the
    #: network's watch version (see paywatch.store.watch)
    watch_seq: int | None = Field(default=None, sa_type=BigInteger, sa_column_kwargs={"server_default": FetchedValue()})
    updated_at: datetime = _when()
    order_id: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    customer_email: str | None = Field(default=None, max_length=320)
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata_: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON, nullable=False))


def _constant(value: Any) -> Any:
    """``value`` written into the SQL text, never bound as a parameter: a query that repeats a
    partial index's predicate must repeat its constants for the planner to prove it (a generic
    plan of a prepared statement sees ``$1``, not the value)."""
    return bindparam(None, value, literal_execute=True)


def unconfirmed() -> ColumnElement[bool]:
    """Invoices whose payments may still cross the confirmation threshold: waiting for
    confirmations, or with seen and confirmed sums apart. The predicate of ``ix_invoice_unconfirmed``
    (and of the PostgreSQL statistics ``st_invoice_unconfirmed``, which give the planner its
    selectivity: by default it takes ``a <> b`` to hold for 99.5% of rows). ``IS TRUE``: the
    planner reads the statistics of a boolean test's argument."""
    waiting = col(Invoice.status) == _constant(InvoiceStatus.WAITING_FOR_CONFIRMATIONS.value)
    return or_(waiting, col(Invoice.amount_paid) != col(Invoice.amount_confirmed)).is_(True)


# Only the few invoices with unconfirmed payments: refresh_confirmations reads it on every scan step.
Index("ix_invoice_unconfirmed", Invoice.network, Invoice.id, postgresql_where=unconfirmed(), sqlite_where=unconfirmed())
# Only the invoices holding a unique amount, by deadline: the expiry sweep releases the expired ones
# (ix_invoice_status_expires, led by the status, made it read every invoice's entry).
_RESERVED = col(Invoice.open_amount).is_not(None)
Index("ix_invoice_reserved_expires", col(Invoice.expires_at), postgresql_where=_RESERVED, sqlite_where=_RESERVED)


class WatchVersion(SQLModel, table=True):
    """Per network, a counter bumped at the commit of every change to what its watch index holds.

    Scanners read it on every step (one primary-key lookup) and load only the invoices whose
    ``watch_seq`` is above the version they have seen. The row named ``*`` counts changes that
    affect every network (a store's late window): they rebuild the whole index.
    """

    __tablename__ = "watch_versions"

    network: str = Field(primary_key=True, max_length=40)
    version: int = Field(default=0, sa_type=BigInteger)


class DepositAddress(SQLModel, table=True):
    """Every address paywatch ever issued; a per-invoice address is never reused."""

    __tablename__ = "deposit_addresses"
    __table_args__ = (UniqueConstraint("network", "address_key", name="uq_deposit_address"),)

    id: int | None = Field(default=None, primary_key=True)
    network: str = Field(max_length=40)
    address: str = Field(max_length=64)
    address_key: str = Field(max_length=64)
    derivation_index: int | None = None
    invoice_id: str | None = Field(default=None, foreign_key="invoices.id", max_length=40)
    created_at: datetime = _when()


class AddressCounter(SQLModel, table=True):
    """Before migration 0004: the next HD index per network. Read once, to seed :class:`AccountCounter`."""

    __tablename__ = "address_counters"

    network: str = Field(primary_key=True, max_length=40)
    next_index: int = 1


class AccountCounter(SQLModel, table=True):
    """The next HD index per account key (an xpub), bumped atomically with UPDATE ... RETURNING.

    Every network configured with the same xpub draws from this one counter, so an address is
    never issued twice, on any network.
    """

    __tablename__ = "account_counters"

    account: str = Field(primary_key=True, max_length=80)
    next_index: int = 1


class StoreAddress(SQLModel, table=True):
    """A store's own shared deposit address on a network, for the memo or the amount strategy.

    ``strategy`` is ``memo`` or ``amount`` for an address derived for the store, or ``any`` for the
    network's configured ``deposit_address``, which belongs to the first store that used it.
    """

    __tablename__ = "store_addresses"
    __table_args__ = (UniqueConstraint("network", "address_key", name="uq_store_address"),)

    store_id: str = Field(primary_key=True, foreign_key="stores.id", max_length=40)
    network: str = Field(primary_key=True, max_length=40)
    strategy: str = Field(primary_key=True, max_length=10)
    address: str = Field(max_length=64)
    address_key: str = Field(max_length=64)
    derivation_index: int | None = None
    created_at: datetime = _when()


class TransferColumns(SQLModel):
    """The on-chain facts of one transfer, shared by payments and the unmatched inbox.

    Identity is (network, tx hash, ``tx_position``): see :class:`Transfer`. ``tx_position`` is
    NULL only on EVM token rows stored before migration 0004 (their position within the
    transaction was never read); :func:`find_transfer` adopts them when the transfer is seen again.
    """

    network: str = Field(max_length=40)
    tx_hash: str = Field(max_length=80)
    log_index: int
    tx_position: int | None = None
    from_address: str = Field(max_length=64)
    to_address: str = Field(max_length=64)
    asset_key: str = Field(max_length=64)
    amount: int = _amount()
    memo: str | None = Field(default=None, max_length=256)
    block_number: int = Field(sa_type=BigInteger)
    block_hash: str = Field(max_length=80)
    block_time: datetime = _when()


#: the names of :class:`TransferColumns`, to copy a transfer's facts from any object that has them
TRANSFER_FIELDS: tuple[str, ...] = tuple(TransferColumns.model_fields)


def transfer_columns(source: Any) -> dict[str, Any]:
    """The transfer facts of ``source`` (a chain Transfer, a Payment or an UnmatchedTransfer)."""
    columns = {name: getattr(source, name) for name in TRANSFER_FIELDS}
    columns["tx_position"] = position_of(source)
    return columns


def position_of(source: Any) -> int | None:
    """A transfer's index within its transaction (None: a row stored before it was recorded)."""
    return source.position if isinstance(source, Transfer) else source.tx_position


class Payment(TransferColumns, table=True):
    """A transfer matched to an invoice. Unique per (network, tx hash, position in the transaction)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("network", "tx_hash", "tx_position", name="uq_payment_transfer"),
        Index("ix_payment_network_block", "network", "block_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoices.id", index=True, max_length=40)
    success: bool = True
    orphaned: bool = False
    late: bool = False
    admitted: bool = False  # attached by an admin: counts even when late
    mempool: bool = False  # seen in the mempool, in no block (block_number -1); never confirmed
    replaceable: bool = False  # the transaction signals BIP125 replaceability
    maturity: int = 0  # confirmations before it counts at all (coinbase outputs: 100)
    created_at: datetime = _when()
    updated_at: datetime = _when()


def maturing_payment() -> ColumnElement[bool]:
    """A payment that counts only once mature (a coinbase output) and is not orphaned: the
    predicate of ``ix_payment_maturing``."""
    return and_(col(Payment.maturity) > _constant(0), col(Payment.orphaned).is_(False))


# Only the payments still maturing: refresh_confirmations reads it on every scan step.
Index(
    "ix_payment_maturing",
    Payment.network,
    Payment.invoice_id,
    postgresql_where=maturing_payment(),
    sqlite_where=maturing_payment(),
)


class UnmatchedTransfer(TransferColumns, table=True):
    """A transfer to a watched address that no invoice claimed; an admin may attach it."""

    __tablename__ = "unmatched_transfers"
    __table_args__ = (
        UniqueConstraint("network", "tx_hash", "tx_position", name="uq_unmatched_transfer"),
        Index("ix_unmatched_network_block", "network", "block_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    reason: str = Field(max_length=40)
    hint_invoice_id: str | None = Field(default=None, max_length=40)
    orphaned: bool = False
    attached_invoice_id: str | None = Field(default=None, max_length=40)
    attached_at: datetime | None = _when(default=None)
    created_at: datetime = _when()


class StatusHistory(SQLModel, table=True):
    """One row per change of an invoice's status or flags."""

    __tablename__ = "status_history"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoices.id", index=True, max_length=40)
    status: str = Field(max_length=32)
    status_version: int
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str = Field(max_length=200)
    at: datetime = _when()


class CallbackEvent(SQLModel, table=True):
    """The transactional outbox: one row per event, written with the change that caused it.

    ``webhook_id`` is stable across retries; ``body`` holds the exact bytes that get signed.
    """

    __tablename__ = "callback_events"
    __table_args__ = (Index("ix_callback_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(unique=True, max_length=40)
    store_id: str = Field(foreign_key="stores.id", index=True, max_length=40)
    invoice_id: str | None = Field(default=None, foreign_key="invoices.id", index=True, max_length=40)
    #: the fiat invoice (hosted checkout) an event is about; its events go out in order too
    fiat_invoice_id: str | None = Field(default=None, index=True, max_length=40)
    type: str = Field(max_length=60)
    status_version: int
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _when(default=None)
    last_attempt_at: datetime | None = _when(default=None)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    delivered_at: datetime | None = _when(default=None)
    created_at: datetime = _when()


class CallbackAttempt(SQLModel, table=True):
    """One delivery attempt of a callback event (the delivery log)."""

    __tablename__ = "callback_attempts"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="callback_events.id", index=True)
    url: str = Field(max_length=2048)
    at: datetime = _when()
    status_code: int | None = None
    latency_ms: int = 0
    error: str | None = Field(default=None, max_length=1000)
    response_excerpt: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class NetworkState(SQLModel, table=True):
    """A network's scan cursor and the heights last read from its node."""

    __tablename__ = "network_states"

    network: str = Field(primary_key=True, max_length=40)
    cursor_height: int | None = Field(default=None, sa_type=BigInteger)
    cursor_hash: str | None = Field(default=None, max_length=80)
    tip_height: int | None = Field(default=None, sa_type=BigInteger)
    final_height: int | None = Field(default=None, sa_type=BigInteger)
    tip_time: datetime | None = _when(default=None)
    last_scan_at: datetime | None = _when(default=None)
    last_error: str | None = Field(default=None, max_length=1000)
    #: the latest cursor block timestamp ever stored: the chain clock never goes back on a reorg
    clock_high: datetime | None = _when(default=None)


class ScannedBlock(SQLModel, table=True):
    """Hashes of recently scanned blocks, for the parent-hash check and reorg walk-back."""

    __tablename__ = "scanned_blocks"

    network: str = Field(primary_key=True, max_length=40)
    number: int = Field(primary_key=True, sa_type=BigInteger)
    hash: str = Field(max_length=80)
    parent_hash: str = Field(max_length=80)
    timestamp: datetime = _when()


class AuditLog(SQLModel, table=True):
    """Admin actions that change money state (attach, mark-paid, cancel, redeliver)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when()
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60)
    subject: str = Field(max_length=100)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def same_transfer(model: type[TransferColumns], source: Any) -> Any:
    """A WHERE clause selecting ``model`` rows of the same (network, tx hash, position) as ``source``."""
    table = model.__table__  # type: ignore[attr-defined]
    return and_(
        table.c.network == source.network,
        table.c.tx_hash == source.tx_hash,
        table.c.tx_position == position_of(source),
    )


_Row = TypeVar("_Row", bound=TransferColumns)


#: (network, tx hash, position): a transfer's identity, see :class:`Transfer`
TransferKey = tuple[str, str, int | None]
_IN_CHUNK = 500  # values per IN (...) list, well below every database's parameter limit


def transfer_key(source: Any) -> TransferKey:
    """The identity of ``source`` (a chain Transfer or a stored row): (network, tx hash, position)."""
    return source.network, source.tx_hash, position_of(source)


def find_transfer(session: Session, model: type[_Row], transfer: Transfer) -> _Row | None:
    """The stored row of ``transfer``, wherever its transaction was mined (see :func:`find_transfers`)."""
    return find_transfers(session, model, [transfer]).get(transfer_key(transfer))


def find_transfers(session: Session, model: type[_Row], transfers: Iterable[Transfer]) -> dict[TransferKey, _Row]:
    """The stored rows of ``transfers`` by :func:`transfer_key`, read with one query per 500 transactions.

    A row stored before its position was recorded (``tx_position`` NULL) is the same transfer
    when transaction, asset, sender, recipient and amount agree; the first such row (by log index)
    not claimed by an earlier transfer of the list adopts the transfer's position now.
    """
    wanted = list(transfers)
    hashes: dict[str, set[str]] = defaultdict(set)
    for transfer in wanted:
        hashes[transfer.network].add(transfer.tx_hash)
    exact: dict[TransferKey, _Row] = {}
    legacy: dict[tuple[Any, ...], list[_Row]] = defaultdict(list)
    for network, of_network in hashes.items():
        ordered = sorted(of_network)
        for i in range(0, len(ordered), _IN_CHUNK):
            rows = session.exec(
                select(model)
                .where(col(model.network) == network, col(model.tx_hash).in_(ordered[i : i + _IN_CHUNK]))
                .order_by(col(model.log_index))
            )
            for row in rows:
                if row.tx_position is None:
                    legacy[_legacy_key(row)].append(row)
                else:
                    exact[transfer_key(row)] = row
    found: dict[TransferKey, _Row] = {}
    for transfer in wanted:
        key = transfer_key(transfer)
        match = exact.get(key)
        if match is None and (candidates := legacy.get(_legacy_key(transfer))):
            match = exact[key] = candidates.pop(0)
            match.tx_position = transfer.position
            session.add(match)
        if match is not None:
            found[key] = match
    return found


def _legacy_key(source: Any) -> tuple[Any, ...]:
    return source.network, source.tx_hash, source.asset_key, source.from_address, source.to_address, source.amount


def insert_new(session: Session, model: type[TransferColumns], rows: list[dict[str, Any]]) -> set[TransferKey]:
    """Insert transfer rows (in multi-row statements), leaving out each whose transfer is stored
    already (another writer's, committed meanwhile); return the keys of the rows inserted."""
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql_insert if dialect == "postgresql" else sqlite_insert
    if not rows:
        return set()
    stmt = insert(table).on_conflict_do_nothing().returning(table.c.network, table.c.tx_hash, table.c.tx_position)
    return {(row[0], row[1], row[2]) for row in session.execute(stmt, rows)}  # batched by the driver
