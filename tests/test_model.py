"""The model-based test of money integrity (issue 9): the proof that no false, double, lost or stolen credit is left.

A hypothesis ``RuleBasedStateMachine`` drives the REAL code on a real database (SQLite, and
PostgreSQL when ``PAYWATCH_TEST_DATABASE_URL`` is set): ``Scanner`` over a scripted in-memory chain
(``tests/support/scripted_chain.py``, behind the same ``ChainAdapter`` Protocol as anvil and the
Tron node), ``rescan_range`` / ``rescan_transaction``, the invoice service functions the API and
CLI call (``create_invoice`` with every strategy, ``cancel_invoice``, ``mark_paid``), the unmatched
inbox's ``attach``, and ``Ledger.expiry_sweep``. Time is a parameter: the machine owns the clock.

After every step a small reference model, written from the rules of ``evaluate()`` in docs/invoices.md and
issue 9 (it calls no ledger or domain code), checks:

(a) every transfer in a scanned, canonical block that pays a watched target is recorded exactly
    once: credited to the one invoice the model attributes it to, or put in the inbox;
(b) nothing is credited from a block whose hash is not the one stored for its height;
(c) ``amount_paid``, ``amount_confirmed``, status and flags equal what the model derives;
(d) ``status_version`` never goes back and moves with every visible change; each invoice's events
    carry versions 1, 2, 3 ... in order, with no gap and no repeat;
(e) no address, memo or unique amount is ever live on two invoices that could both receive it;
(f) every status change in the history has exactly one outbox event of its type and version.

Known defects. Issue 9 lists defects that other branches are fixing. The operations (or, for two
of them, the strictness of a check) that hit them are SWITCHES, off by default so that this suite
is green on a branch without the fixes. Turn them on with ``PAYWATCH_MODEL_ENABLE=all`` or a
comma-separated list of names from :data:`SWITCHES` (after the fixes are merged, the lead runs
``PAYWATCH_MODEL_ENABLE=all``; then every switch should be on by default).

Sizes: ``PAYWATCH_MODEL_EXAMPLES`` (default 100 per database), ``PAYWATCH_MODEL_STEPS`` (default
25), ``PAYWATCH_MODEL_SEED`` (default: random; always printed). ``bench/model_check.py`` runs the
big run (5,000 examples). A failure prints the seed and the shrunk sequence of steps.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, create_engine, event
from sqlmodel import Session, SQLModel, col, select

from paywatch.addresses import shared_address
from paywatch.config import AppConfig, AssetConfig, NetworkConfig, Settings, parse_networks
from paywatch.errors import ChainError, ConflictError, InputError, RetryableChainError
from paywatch.invoices import InvoiceRequest, cancel_invoice, create_invoice, get_invoice, mark_paid
from paywatch.ledger import Ledger
from paywatch.rescan import rescan_range, rescan_transaction
from paywatch.scanner import Scanner
from paywatch.store.db import make_engine, normalize_url, session_scope, upgrade
from paywatch.store.models import (
    CallbackEvent,
    Invoice,
    NetworkState,
    Payment,
    ScannedBlock,
    StatusHistory,
    Store,
    UnmatchedTransfer,
)
from paywatch.stores import create_store, update_store
from paywatch.unmatched import attach
from tests.conftest import TRON_XPUB, USDT_TRON, database_params, fresh_postgres_database
from tests.support.scripted_chain import Leg, PlacedTransfer, ScriptedChain

# --- switches for the known defects of issue 9 ----------------------------------------------------

#: name -> (issue 9 defect, what turning it on adds). Off by default until the fixes are merged.
SWITCHES: dict[str, str] = {
    "rescan_ahead": "defect 1: rescans beyond the cursor, and over blocks a reorg replaced that the scanner has "
    "not re-read yet (default: rescans only over blocks the scanner stored and that are still canonical)",
    "amount_reuse": "defect 3: amount invoices share base amounts, so a released unique amount is issued again "
    "(default: every amount invoice has its own base amount)",
    "pay_cancelled": "defect 12: payments to cancelled invoices, and cancelling invoices a payment was sent to "
    "(default: only invoices nobody ever paid are cancelled, and nobody pays them afterwards)",
    "memo_variants": "defect 10: memos paid in lower case or with surrounding whitespace (default: exact memo)",
    "dust": "defect 14: one-base-unit payments, which must go to the inbox as dust (needs `min_amount` in "
    "networks.yaml; default: no dust)",
    "expiry_lag": "defect 5: the expiry sweep runs while the scanner lags, and expiry is checked by block time "
    "(default: the sweep first brings the scanner to a block at `now`, and an invoice may also expire "
    "by the wall clock)",
    "attach_late": "defect 9: attaching a transfer that is late for the invoice; it must count, flagged paid_late "
    "(default: only on-time transfers are attached, unless the store accepts late payments)",
    "reorg_attached": "defect 4: a reorg re-mines attached transfers; they must stay credited "
    "(default: a reorg drops attached transfers)",
    "remine_completed": "defect 6: a reorg re-mines the payments of COMPLETED invoices, and every invoice's last "
    "event must tell its current status and paid amount, so a restored payment must send an event (default: a "
    "reorg drops them, and the last event is not compared)",
    "flag_only_events": "defect 13: every new status_version has its event, and the last event tells the current "
    "flags (default: versions may skip numbers)",
    "credited_stays": "found by this test: a credited transfer read again (rescan, or re-mined by a reorg) after "
    "its unique amount was released or in a block past the late window goes to the inbox and its credit is "
    "lost (default: such rescans are skipped and such transactions are dropped by reorgs)",
    "evm_index": "defect 1 (re-mined tokens): the scripted chain numbers token transfers across the block, as the "
    "EVM adapter does, so a re-mined transfer comes back with another log index (default: position in the "
    "transaction, as the Tron adapter does)",
    "policy": "defect 11: the store policy changes while invoices are open (default: the policy is set once, "
    "at the start of each example)",
}


#: Switches on in every run. Add a switch here once its defect's fix is merged (and drop its entry's
#: expected failure in KNOWN_DEFECT_SEQUENCES); at the end every switch belongs here.
ON_BY_DEFAULT: frozenset[str] = frozenset(SWITCHES)


def enabled_switches(value: str | None = None) -> frozenset[str]:
    """``ON_BY_DEFAULT`` plus the switches named by ``PAYWATCH_MODEL_ENABLE`` (``all``, or names and commas)."""
    raw = os.environ.get("PAYWATCH_MODEL_ENABLE", "") if value is None else value
    names = {part.strip() for part in raw.split(",") if part.strip()} | ON_BY_DEFAULT
    if "all" in names:
        return frozenset(SWITCHES)
    unknown = names - set(SWITCHES)
    if unknown:
        raise ValueError(f"PAYWATCH_MODEL_ENABLE: unknown switch(es) {sorted(unknown)}; known: {sorted(SWITCHES)}")
    return frozenset(names)


# --- the network the machine runs -----------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NET = "tron"
CONFIRMATIONS = 3
BLOCK_SECONDS = 3
UNIT = 10**6  # both assets have 6 decimals
MIN_AMOUNT = "0.001"  # per-asset dust threshold written to networks.yaml when the field exists
MIN_UNITS = 1000
FAKE_TOKEN = "TXLAQ63Xg1NAzckPwKHvzw7CSEmLMEqcdj"  # a token contract that networks.yaml does not list
MAX_INVOICES = 8
STATUS_EVENTS = {
    "WAITING_FOR_CONFIRMATIONS": "invoice.waiting_for_confirmations",
    "PARTIAL": "invoice.partial",
    "COMPLETED": "invoice.completed",
    "EXPIRED": "invoice.expired",
    "PARTIALLY_EXPIRED": "invoice.partially_expired",
    "CANCELLED": "invoice.cancelled",
    "PENDING": "invoice.payment_reverted",  # a move back to PENDING is reported by the revert event
}
PAY_KINDS = [
    "exact",
    "partial",
    "over",
    "wrong_asset",
    "failed",
    "fake_token",
    "no_memo",
    "memo_lower",
    "memo_spaces",
    "dust",
]
OPEN = ("PENDING", "PARTIAL", "WAITING_FOR_CONFIRMATIONS", "EXPIRED", "PARTIALLY_EXPIRED")


def network_config() -> NetworkConfig:
    has_min = "min_amount" in AssetConfig.model_fields
    extra = f', min_amount: "{MIN_AMOUNT}"' if has_min else ""
    text_ = f"""
networks:
  {NET}:
    family: tron
    rpc_urls: ["http://127.0.0.1:1"]
    confirmations: {CONFIRMATIONS}
    batch_blocks: 5
    start_block: 0
    xpub: "{TRON_XPUB}"
    assets:
      TRX: {{native: true, decimals: 6{extra}}}
      USDT: {{contract: "{USDT_TRON}", decimals: 6{extra}}}
"""
    return parse_networks(text_, source="model-networks.yaml", env={})[NET]


ASSET_KEYS = {"TRX": "native", "USDT": USDT_TRON}


# --- the reference model --------------------------------------------------------------------------


@dataclass(frozen=True)
class MPolicy:
    """A store policy as the model sees it."""

    tolerance: Fraction = Fraction(0)
    accept_late: bool = False
    late_window: int = 600  # seconds


@dataclass
class MInvoice:
    """One invoice as the reference model knows it (facts copied at creation, latches set by the model)."""

    id: str
    strategy: str
    address: str
    memo: str | None
    amount: int
    asset_key: str
    created_at: datetime
    expires_at: datetime
    policy_from: int  # index into the machine's policy list: the policies this invoice has lived under
    cancelled: bool = False
    completed: bool = False
    marked_paid: bool = False
    must_expire: bool = False
    targeted: bool = False
    late_ever: bool = False
    overpaid_ever: bool = False
    reverted_ever: bool = False
    keys: set[tuple[tuple[str, int], str]] = field(default_factory=set)  # (identity, block hash) credited
    seen_ids: set[tuple[str, int]] = field(default_factory=set)  # identities ever credited
    version: int = 1
    shown: tuple[Any, ...] = ()


def due_of(amount: int, tolerance: Fraction) -> int:
    """``amount * (1 - tolerance)`` rounded up, never below 1 (docs/invoices.md, the rules of evaluate())."""
    keep = 1 - tolerance
    return max(1, -(-amount * keep.numerator // keep.denominator))


def normal_memo(memo: str | None) -> str | None:
    """Memos match regardless of case and surrounding whitespace (issue 9, defect 10)."""
    return memo.strip().upper() if memo else None


Decision = tuple[str, str]  # ("invoice", id) or ("inbox", reason)


@dataclass
class Expected:
    """What the model expects of one invoice under one candidate policy."""

    statuses: frozenset[str]
    paid: int
    confirmed: int
    overpaid_required: bool
    late_required: bool


def expected_invoice(
    inv: MInvoice,
    credited: list[tuple[PlacedTransfer, bool]],
    tip: int,
    policy: MPolicy,
    *,
    expiry_states: frozenset[bool],
) -> Expected:
    """Status and sums from the credited transfers (each with ``attached``), the stored tip and the policy."""
    seen = confirmed = 0
    late_any = False
    for placed, attached in credited:
        t = placed.transfer
        late = t.block_time > inv.expires_at
        late_any = late_any or late
        if late and not policy.accept_late and not attached:
            continue
        seen += t.amount
        if tip - t.block_number + 1 >= CONFIRMATIONS:
            confirmed += t.amount
    due = due_of(inv.amount, policy.tolerance)
    if inv.cancelled:
        statuses = frozenset({"CANCELLED"})
    elif inv.completed or confirmed >= due:
        statuses = frozenset({"COMPLETED"})
    elif seen >= due:
        statuses = frozenset({"WAITING_FOR_CONFIRMATIONS"})
    else:
        options = set()
        for expired in expiry_states:
            if expired:
                options.add("PARTIALLY_EXPIRED" if seen else "EXPIRED")
            else:
                options.add("PARTIAL" if seen else "PENDING")
        statuses = frozenset(options)
    overpaid = "COMPLETED" in statuses and not inv.cancelled and confirmed > inv.amount
    return Expected(statuses, seen, confirmed, overpaid, late_any)


# --- the machine ------------------------------------------------------------------------------


class ModelFailure(AssertionError):
    """An invariant of the money model does not hold."""


def _reset(engine: Engine) -> None:
    """Empty every table (children first), in one transaction; on PostgreSQL in one round trip."""
    deletes = [f"DELETE FROM {t.name}" for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # psycopg runs several statements given no parameters
            conn.exec_driver_sql("; ".join(deletes))
        else:  # sqlite3 runs one statement per call (and in-process: no round trip to save)
            for sql in deletes:
                conn.exec_driver_sql(sql)


class CommitCounter:
    """Counts the transactions committed on an engine that ran anything but a SELECT: the only way
    the model's database changes (a transaction rolled back, or one that only read, changes nothing).

    The invariant reads the database after every step; after a step that wrote nothing (mining,
    paying, a reorg, the clock touch only the scripted chain; a scan with no new block only reads)
    it checks the rows it read last, which are what a new read would return.
    """

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._writing: set[int] = set()  # connections whose open transaction ran a non-SELECT
        event.listen(engine, "before_cursor_execute", self._executing)
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", self._rolled_back)

    def _executing(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if verb not in ("SELECT", "BEGIN"):  # BEGIN: SQLite's own BEGIN IMMEDIATE (db.make_engine)
            self._writing.add(id(conn))

    def _committed(self, conn: Any) -> None:
        if id(conn) in self._writing:
            self._writing.discard(id(conn))
            self.count += 1

    def _rolled_back(self, conn: Any) -> None:
        self._writing.discard(id(conn))


@dataclass
class DatabaseView:
    """The rows the invariant checks, read in one transaction, and the commit count they were read at."""

    commits: int
    cursor: int | None
    tip: int
    blocks: list[tuple[int, str]]
    invoices: dict[str, Invoice]
    payments: list[Payment]
    inbox: list[UnmatchedTransfer]
    events: list[CallbackEvent]
    history: list[StatusHistory]


class MoneyModel(RuleBasedStateMachine):
    """Drives the real scanner, rescans, ledger and invoice services; checks the reference model after each step."""

    engine: ClassVar[Engine]
    commits: ClassVar[CommitCounter]
    db_url: ClassVar[str]
    switches: ClassVar[frozenset[str]] = frozenset()
    examples: ClassVar[int] = 0

    #: print a progress line every this many examples (0: never); the big run sets it
    progress_every: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        if self.progress_every and type(self).examples % self.progress_every == 0:
            print(f"  {type(self).examples} examples", flush=True)
        _reset(self.engine)
        self.now = T0
        self.network = network_config()
        self.config = AppConfig(
            settings=Settings(database_url=self.db_url, networks=Path("model-networks.yaml")),
            networks={NET: self.network},
        )
        self.ledger = Ledger(self.config.networks)
        self.chain = ScriptedChain.for_network(self.network, T0, index_mode="block" if self.on("evm_index") else "tx")
        self.scanner = Scanner(self.network, self.chain, self.engine, self.ledger, lambda: self.now, prefetch=False)
        shared = shared_address(self.network)
        assert shared is not None
        self.shared = shared
        self.store_id = ""
        self.policies: list[MPolicy] = []
        self.invoices: list[MInvoice] = []
        self.by_id: dict[str, MInvoice] = {}
        self.decisions: dict[tuple[tuple[str, int], str], Decision | None] = {}
        self.attached: dict[tuple[str, int], str] = {}
        self.owner: dict[tuple[str, int], str] = {}
        self.base_amounts = 0
        self.db: dict[str, Invoice] = {}
        self.view: dict[int, str] = {}
        self.cursor: int | None = None
        self.view_transfers: list[PlacedTransfer] = []
        self.sent: list[Any] = []  # every transaction sent, for rescan-tx
        self.last_read: DatabaseView | None = None

    def on(self, switch: str) -> bool:
        return switch in self.switches

    @property
    def policy(self) -> MPolicy:
        return self.policies[-1]

    # --- set-up -------------------------------------------------------------------------------

    @initialize(
        accept_late=st.booleans(),
        late_window=st.sampled_from([0, 300, 3600]),
        tolerance=st.sampled_from(["0", "0.05"]),
    )
    def open_store(self, accept_late: bool, late_window: int, tolerance: str) -> None:
        with session_scope(self.engine) as s:
            store = create_store(s, "model shop", self.now).store
            store.accept_late_payments = accept_late
            store.late_window_seconds = late_window
            store.underpaid_tolerance = tolerance
            s.add(store)
            self.store_id = store.id
        self.policies.append(MPolicy(Fraction(tolerance), accept_late, late_window))

    # --- invoices -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.invoices) < MAX_INVOICES)
    @rule(
        strategy=st.sampled_from(["address", "memo", "amount"]),
        asset=st.sampled_from(["USDT", "TRX"]),
        units=st.sampled_from([5, 10, 25]),
        expires_in=st.sampled_from([120, 600]),
    )
    def create(self, strategy: str, asset: str, units: int, expires_in: int) -> None:
        amount = units * UNIT
        if strategy == "amount" and self.on("amount_reuse"):
            amount = 5 * UNIT  # one base amount for every amount invoice: released amounts get issued again
        elif strategy == "amount":
            self.base_amounts += 1
            amount = (1000 + self.base_amounts * 7) * UNIT  # a base amount no other invoice uses
        with session_scope(self.engine) as s:
            store = s.get(Store, self.store_id)
            assert store is not None
            request = InvoiceRequest(NET, asset, _dec(amount), expires_in, match=strategy)
            inv = create_invoice(s, self.config, store, request, self.now)
            s.flush()
            model = MInvoice(
                id=inv.id,
                strategy=strategy,
                address=inv.address,
                memo=inv.memo,
                amount=inv.amount,
                asset_key=inv.asset_key,
                created_at=self.now,
                expires_at=inv.expires_at,
                policy_from=len(self.policies) - 1,
            )
        self._check_unique_target(model)
        self.invoices.append(model)
        self.by_id[model.id] = model

    def _check_unique_target(self, new: MInvoice) -> None:
        """(e): an address, memo or unique amount is never live on two invoices that could both receive it."""
        for old in self.invoices:
            if new.strategy == "address" or old.strategy == "address":
                _expect(new.address != old.address, f"(e) address {new.address} issued to {old.id} and {new.id}")
            if new.strategy == "memo" and old.strategy == "memo":
                _expect(
                    normal_memo(new.memo) != normal_memo(old.memo),
                    f"(e) memo {new.memo} issued to {old.id} and {new.id}",
                )
            if (
                new.strategy == "amount"
                and old.strategy == "amount"
                and (new.asset_key, new.amount)
                == (
                    old.asset_key,
                    old.amount,
                )
            ):
                deadline = old.expires_at + timedelta(seconds=self.policy.late_window)
                _expect(
                    new.created_at > deadline,
                    f"(e) amount {new.amount} issued to {new.id} at {new.created_at:%H:%M:%S} while {old.id} "
                    f"({self.db[old.id].status if old.id in self.db else '?'}) can still receive it "
                    f"until {deadline:%H:%M:%S}",
                )

    def _pick(self, index: int, *, payable: bool = False) -> MInvoice | None:
        pool = self.invoices
        if payable and not self.on("pay_cancelled"):
            pool = [i for i in pool if not i.cancelled]
        return pool[index % len(pool)] if pool else None

    @precondition(lambda self: self.invoices)
    @rule(which=st.integers(0, MAX_INVOICES - 1))
    def cancel(self, which: int) -> None:
        inv = self._pick(which)
        assert inv is not None
        if inv.targeted and not self.on("pay_cancelled"):
            return
        shown = self.db[inv.id]
        with Session(self.engine) as s:  # a late payment that does not count is still money received
            received = s.exec(
                select(Payment.id).where(Payment.invoice_id == inv.id, col(Payment.orphaned).is_(False))
            ).first()
        allowed = shown.status not in ("COMPLETED", "CANCELLED") and shown.amount_paid == 0 and received is None
        try:
            with session_scope(self.engine) as s:
                cancel_invoice(s, self.ledger, get_invoice(s, self.store_id, inv.id), self.now, actor="model")
        except ConflictError:
            _expect(not allowed, f"cancel of {inv.id} ({shown.status}, paid {shown.amount_paid}) was refused")
            return
        _expect(allowed, f"cancel of {inv.id} ({shown.status}, paid {shown.amount_paid}) was accepted")
        inv.cancelled = True

    @precondition(lambda self: self.invoices)
    @rule(which=st.integers(0, MAX_INVOICES - 1))
    def mark_paid(self, which: int) -> None:
        inv = self._pick(which)
        assert inv is not None
        shown = self.db[inv.id]
        allowed = shown.status not in ("COMPLETED", "CANCELLED")
        try:
            with session_scope(self.engine) as s:
                mark_paid(s, self.ledger, get_invoice(s, self.store_id, inv.id), self.now, actor="model")
        except ConflictError:
            _expect(not allowed, f"mark-paid of {inv.id} ({shown.status}) was refused")
            return
        _expect(allowed, f"mark-paid of {inv.id} ({shown.status}) was accepted")
        inv.completed = inv.marked_paid = True

    # --- payments -------------------------------------------------------------------------------

    def _leg(self, inv: MInvoice, kind: str) -> tuple[Leg, str | None, bool]:
        to = inv.address
        memo = inv.memo
        asset = inv.asset_key
        amount = inv.amount
        success = True
        if kind == "partial":
            amount = max(1, inv.amount // 2)
        elif kind == "over":
            amount = inv.amount + inv.amount // 2
        elif kind == "wrong_asset":
            asset = "native" if asset != "native" else USDT_TRON
        elif kind == "fake_token":
            asset = FAKE_TOKEN
        elif kind == "failed":
            success = False
        elif kind == "dust":
            amount = 1
        elif kind == "memo_lower" and memo:
            memo = memo.lower()
        elif kind == "memo_spaces" and memo:
            memo = f"  {memo[:5].lower()}{memo[5:]}\n"
        elif kind == "no_memo":
            memo = None
        return Leg(to, asset, amount), memo, success

    def _allowed_kind(self, kind: str) -> bool:
        if kind in ("memo_lower", "memo_spaces"):
            return self.on("memo_variants")
        if kind == "dust":
            return self.on("dust")
        return True

    @precondition(lambda self: self.invoices)
    @rule(which=st.integers(0, MAX_INVOICES - 1), kind=st.sampled_from(PAY_KINDS))
    def pay(self, which: int, kind: str) -> None:
        inv = self._pick(which, payable=True)
        if inv is None or not self._allowed_kind(kind):
            return
        leg, memo, success = self._leg(inv, kind)
        inv.targeted = True
        self.sent.append(self.chain.send([leg], memo=memo, success=success, sent_at=self.now))

    @precondition(lambda self: self.invoices)
    @rule(which=st.integers(0, MAX_INVOICES - 1), kind=st.sampled_from(["exact", "partial", "over"]))
    def pay_and_confirm(self, which: int, kind: str) -> None:
        """A shortcut through the common path: pay, mine one block, scan, mine to the threshold, scan."""
        self.pay(which, kind)
        self._mine(1)
        self.scanner.run_until_caught_up(max_steps=100)
        self._mine(CONFIRMATIONS - 1)
        self.scanner.run_until_caught_up(max_steps=100)

    @precondition(lambda self: len(self.invoices) >= 2)
    @rule(first=st.integers(0, MAX_INVOICES - 1), second=st.integers(0, MAX_INVOICES - 1), batch=st.booleans())
    def pay_two_in_one_block(self, first: int, second: int, batch: bool) -> None:
        """Two invoices paid exactly in the same block: two transactions, or one transaction with two token legs."""
        a, b = self._pick(first, payable=True), self._pick(second, payable=True)
        if a is None or b is None:
            return
        legs = [self._leg(inv, "exact") for inv in (a, b)]
        a.targeted = b.targeted = True
        if batch and all(leg.asset_key != "native" for leg, _, _ in legs) and legs[0][1] == legs[1][1] is None:
            self.sent.append(self.chain.send([legs[0][0], legs[1][0]], sent_at=self.now))
        else:
            for leg, memo, success in legs:
                self.sent.append(self.chain.send([leg], memo=memo, success=success, sent_at=self.now))
        self._mine(1)

    # --- the chain and time ---------------------------------------------------------------------

    def _mine(self, count: int) -> None:
        for _ in range(count):
            self.now += timedelta(seconds=BLOCK_SECONDS)
            self.chain.mine(self.now)

    @rule(count=st.integers(1, 4))
    def mine(self, count: int) -> None:
        self._mine(count)

    @rule(seconds=st.sampled_from([30, 120, 400, 1800]))
    def advance_time(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @precondition(lambda self: self.chain.tip >= 1)
    @rule(depth=st.integers(1, 12), extra=st.integers(0, 2), data=st.data())
    def reorg(self, depth: int, extra: int, data: st.DataObject) -> None:
        """Replace the top blocks; each removed transaction is dropped or re-mined in a new block."""
        depth = min(depth, self.chain.tip)
        removed = self.chain.blocks[-depth:]
        base = removed[0].number
        times = [b.timestamp for b in removed] + [max(self.now, removed[-1].timestamp)] * extra
        placement: dict[str, int | None] = {}
        for block in removed:
            for tx in block.txs:
                lowest = block.number - base
                choice = data.draw(st.one_of(st.none(), st.integers(lowest, depth + extra - 1)), label=tx.tx_hash[:10])
                if choice is not None and self._must_drop(block, tx.tx_hash, times[choice]):
                    choice = None
                placement[tx.tx_hash] = choice
        self.chain.reorg(depth, placement, extra=extra, extra_time=self.now)

    def _owner(self, identity: tuple[str, int]) -> MInvoice | None:
        owner = self.attached.get(identity) or self.owner.get(identity)
        return self.by_id[owner] if owner is not None else None

    def _released(self, owner: MInvoice) -> bool:
        """An amount invoice whose unique amount the database no longer reserves."""
        return owner.strategy == "amount" and self.db[owner.id].open_amount is None

    def _must_drop(self, block: Any, tx_hash: str, when: datetime) -> bool:
        """Default: a transaction whose re-mining hits a known defect is dropped instead."""
        for placed in self.chain.placed_transfers(block):
            if placed.transfer.tx_hash != tx_hash:
                continue
            if placed.identity in self.attached and not self.on("reorg_attached"):
                return True
            owner = self._owner(placed.identity)
            if owner is None:
                continue
            if owner.completed and not self.on("remine_completed"):
                return True
            if not self.on("credited_stays") and (when > self._deadline(owner) or self._released(owner)):
                return True
        return False

    def _rereads_released(self, lo: int, hi: int) -> bool:
        """Whether blocks lo..hi hold a credited transfer that matching alone would no longer attribute."""
        for placed in self.view_transfers:
            t = placed.transfer
            owner = self._owner(placed.identity)
            if lo <= t.block_number <= hi and owner is not None and self._released(owner):
                return True
        return False

    # --- scanning -------------------------------------------------------------------------------

    @rule()
    def scan(self) -> None:
        before = self.cursor
        self.scanner.run_until_caught_up(max_steps=100)
        with Session(self.engine) as s:
            state = s.get(NetworkState, NET)
            assert state is not None and state.cursor_height is not None
            cursor = state.cursor_height
        if before is None or self.chain.tip > before:  # a new block lets the scanner see any reorg
            _expect(cursor == self.chain.tip, f"scan stopped at {cursor}, tip {self.chain.tip}")
            _expect(self._fresh(), "after a full scan the stored block hashes differ from the canonical chain")

    @rule()
    def scan_one_step(self) -> None:
        self.scanner.step()

    def _fresh(self) -> bool:
        """Whether every stored block hash up to the cursor is the canonical one (the scanner's view is current)."""
        with Session(self.engine) as s:
            state = s.get(NetworkState, NET)
            if state is None or state.cursor_height is None:
                return True
            if state.cursor_height > self.chain.tip:
                return False
            rows = s.exec(select(ScannedBlock.number, ScannedBlock.hash).where(ScannedBlock.network == NET)).all()
        return all(number > self.chain.tip or self.chain.blocks[number].hash == h for number, h in rows)

    @rule(lo=st.integers(0, 60), span=st.integers(0, 12))
    def rescan(self, lo: int, span: int) -> None:
        cursor = self.cursor if self.cursor is not None else -1
        top = self.chain.tip if self.on("rescan_ahead") else min(cursor, self.chain.tip)
        if top < 0 or (not self.on("rescan_ahead") and not self._fresh()):
            return
        lo = lo % (top + 1)
        hi = min(top, lo + span)
        if not self.on("credited_stays") and self._rereads_released(lo, hi):
            return
        try:
            rescan_range(self.engine, self.network, self.chain, self.ledger, start=lo, end=hi, clock=lambda: self.now)
        except (ConflictError, InputError, RetryableChainError):
            # refused: a rescan reads only blocks the scanner has stored, with the hashes it stored
            assert hi > cursor or not self._fresh(), f"a rescan of {lo}..{hi} inside the scanned chain was refused"

    @precondition(lambda self: self.sent)
    @rule(which=st.integers(0, 40))
    def rescan_tx(self, which: int) -> None:
        tx = self.sent[which % len(self.sent)]
        block = self.chain.find_tx(tx.tx_hash)
        if block is None:
            return
        if not self.on("rescan_ahead") and (self.cursor is None or block.number > self.cursor or not self._fresh()):
            return
        if not self.on("credited_stays") and self._rereads_released(block.number, block.number):
            return
        try:
            rescan_transaction(self.engine, self.network, self.chain, self.ledger, tx.tx_hash, clock=lambda: self.now)
        except (ConflictError, InputError, RetryableChainError):
            # refused: the transaction's block is above the cursor or not the block the scanner stored
            refusable = self.cursor is None or block.number > self.cursor or not self._fresh()
            assert refusable, f"rescan-tx of a transaction in scanned block {block.number} was refused"

    @rule()
    def expiry_sweep(self) -> None:
        if not self.on("expiry_lag"):
            self.chain.mine(self.now)  # a block at `now`, then the scanner catches up to it
            self.scanner.run_until_caught_up(max_steps=100)
        with session_scope(self.engine) as s:
            self.ledger.expiry_sweep(s, self.now)
        top = self._scanned_top_time()
        for inv in self.invoices:
            by_block = top is not None and top >= inv.expires_at
            if by_block or (not self.on("expiry_lag") and self.now >= inv.expires_at):
                inv.must_expire = True

    def _scanned_top_time(self) -> datetime | None:
        with Session(self.engine) as s:
            state = s.get(NetworkState, NET)
            if state is None or state.cursor_height is None:
                return None
            block = s.get(ScannedBlock, (NET, state.cursor_height))
            return block.timestamp if block is not None else None

    # --- the inbox ------------------------------------------------------------------------------

    @precondition(lambda self: self.invoices)
    @rule(row=st.integers(0, 20), which=st.integers(0, MAX_INVOICES - 1))
    def attach_unmatched(self, row: int, which: int) -> None:
        with Session(self.engine) as s:
            rows = list(
                s.exec(
                    select(UnmatchedTransfer)
                    .where(
                        col(UnmatchedTransfer.attached_invoice_id).is_(None), col(UnmatchedTransfer.orphaned).is_(False)
                    )
                    .order_by(col(UnmatchedTransfer.id))
                )
            )
        rows = [
            r
            for r in rows
            if self.cursor is not None
            and r.block_number <= self.cursor
            and r.block_hash == self.view.get(r.block_number)
        ]
        if not rows or (not self.on("reorg_attached") and not self._fresh()):
            return  # attaching from a block a reorg already replaced: the scanner will re-mine it (defect 4)
        item = rows[row % len(rows)]
        same_asset = [i for i in self.invoices if i.asset_key == item.asset_key]
        # Mostly an invoice of the transfer's asset (an attach that can succeed); sometimes any invoice.
        inv = same_asset[which % len(same_asset)] if same_asset and which % 4 else self._pick(which)
        assert inv is not None
        shown = self.db[inv.id]
        if shown.status in ("COMPLETED", "CANCELLED") or item.amount < MIN_UNITS:
            return
        late = item.block_time > inv.expires_at
        if late and not self.policy.accept_late and not self.on("attach_late"):
            return
        allowed = item.asset_key == inv.asset_key
        try:
            with session_scope(self.engine) as s:
                attach(s, self.ledger, item.id or 0, inv.id, self.now, actor="model")
        except ConflictError as exc:
            _expect(not allowed, f"attach of transfer {item.id} to {inv.id} was refused: {exc}")
            return
        _expect(allowed, f"attach of a {item.asset_key} transfer to {inv.id} ({inv.asset_key}) was accepted")
        placed = next(
            p
            for p in self.view_transfers
            if (p.transfer.tx_hash, p.transfer.log_index, p.transfer.block_hash)
            == (item.tx_hash, item.log_index, item.block_hash)
        )
        self.attached[placed.identity] = inv.id

    # --- policy (defect 11) ---------------------------------------------------------------------

    @precondition(lambda self: self.on("policy") and self.policies)
    @rule(
        accept_late=st.booleans(),
        late_window=st.sampled_from([0, 300, 3600]),
        tolerance=st.sampled_from(["0", "0.05", "0.2"]),
    )
    def change_policy(self, accept_late: bool, late_window: int, tolerance: str) -> None:
        # the service behind `paywatch store update` and `PATCH /v1/store`
        with session_scope(self.engine) as s:
            store = s.get(Store, self.store_id)
            assert store is not None
            update_store(
                s,
                store,
                self.now,
                actor="model",
                allow_private_callbacks=True,
                underpaid_tolerance=tolerance,
                accept_late_payments=accept_late,
                late_window=str(late_window),
            )
        self.policies.append(MPolicy(Fraction(tolerance), accept_late, late_window))

    # --- the model's attribution -----------------------------------------------------------------

    def decide(self, t: Any, covered: frozenset[str] = frozenset()) -> Decision | None:
        """Which invoice a transfer belongs to (or the inbox), from the issue's rules alone.

        ``covered``: invoices whose confirmed payments in earlier blocks already settle them, so
        that the scanner may have completed them before it reached ``t``.
        """
        if not t.success or t.amount <= 0:
            return None
        to = t.to_address
        target: MInvoice | None = None
        for inv in self.invoices:
            if inv.strategy == "address" and inv.address == to:
                target = inv
        # each store has its own shared address per strategy (issue 10, finding 5); the network's
        # index 0 stays watched for invoices issued before that
        on_address = [inv for inv in self.invoices if inv.strategy != "address" and inv.address == to]
        if target is None and not on_address and to != self.shared:
            return None  # not a watched address
        if self.on("dust") and t.amount < MIN_UNITS:
            return ("inbox", "dust")
        if target is None:
            memo = normal_memo(t.memo) if self.on("memo_variants") else t.memo
            if memo:  # a transfer that carries a memo is matched by its memo only
                for inv in on_address:
                    if inv.strategy == "memo" and inv.memo == memo:
                        target = inv
            elif not any(inv.strategy == "memo" for inv in on_address):  # a memo address never falls through
                for inv in on_address:
                    if (
                        inv.strategy == "amount"
                        and inv.asset_key == t.asset_key
                        and inv.amount == t.amount
                        and inv.created_at <= t.block_time <= self._deadline(inv)
                    ):
                        target = inv
            if target is None:
                return ("inbox", "no match")
        if target.asset_key != t.asset_key:
            return ("inbox", "asset_mismatch")
        if t.block_time > self._deadline(target):
            return ("inbox", "expired_beyond_late_window")
        if target.cancelled:
            return ("inbox", "invoice_cancelled")
        if target.strategy == "amount" and (target.completed or target.id in covered):
            # Issue 9 (defect 3): "such a payment goes to the old invoice (flagged) or to the inbox".
            return ("either", target.id)
        return ("invoice", target.id)

    def _deadline(self, inv: MInvoice) -> datetime:
        return inv.expires_at + timedelta(seconds=self.policy.late_window)

    # --- after every step: sync with the database and check ----------------------------------------

    def read_database(self) -> DatabaseView:
        """The rows the invariant checks; read again only if a transaction committed since the last read."""
        last = self.last_read
        if last is not None and last.commits == self.commits.count:
            return last
        commits = self.commits.count
        with Session(self.engine) as s:  # read only: rolled back, counts no commit
            state = s.get(NetworkState, NET)
            self.last_read = DatabaseView(
                commits=commits,
                cursor=state.cursor_height if state else None,
                tip=state.tip_height if state and state.tip_height is not None else -1,
                blocks=[
                    (n, h)
                    for n, h in s.exec(
                        select(ScannedBlock.number, ScannedBlock.hash).where(ScannedBlock.network == NET)
                    )
                ],
                invoices={i.id: i for i in s.exec(select(Invoice))},
                payments=list(s.exec(select(Payment))),
                inbox=list(s.exec(select(UnmatchedTransfer))),
                events=list(s.exec(select(CallbackEvent).order_by(col(CallbackEvent.id)))),
                history=list(s.exec(select(StatusHistory).order_by(col(StatusHistory.id)))),
            )
        return self.last_read

    @invariant()
    def money_is_right(self) -> None:
        if not self.policies:
            return
        read = self.read_database()
        cursor, tip, blocks, invoices = read.cursor, read.tip, read.blocks, read.invoices
        payments, inbox, events, history = read.payments, read.inbox, read.events, read.history
        self.cursor = cursor
        self.db = invoices
        self.view = {n: h for n, h in blocks if cursor is not None and n <= cursor}
        for number, block_hash in self.view.items():
            _expect(block_hash in self.chain.by_hash, f"stored hash of block {number} is no block the chain made")
        placed = [p for n in sorted(self.view) for p in self.chain.placed_transfers(self.chain.by_hash[self.view[n]])]
        self.view_transfers = placed
        confirmed_before: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)  # (block, amount, counts)
        for p in placed:
            key = (p.identity, p.transfer.block_hash)
            if key not in self.decisions and p.identity not in self.owner and p.identity not in self.attached:
                covered = frozenset(
                    inv_id
                    for inv_id, items in confirmed_before.items()
                    if sum(a for b, a, c in items if c and b < p.transfer.block_number and tip - b + 1 >= CONFIRMATIONS)
                    >= due_of(self.by_id[inv_id].amount, self.policy.tolerance)
                )
                decision = self.decisions[key] = self.decide(p.transfer, covered)
                if decision is not None and decision[0] == "invoice":
                    self.owner[p.identity] = decision[1]  # a credited transfer keeps its invoice when re-mined
            owner_id = self.attached.get(p.identity) or self.owner.get(p.identity)
            if owner_id is not None:
                owner_inv = self.by_id[owner_id]
                counts = (
                    p.transfer.block_time <= owner_inv.expires_at
                    or self.policy.accept_late
                    or p.identity in self.attached
                )
                confirmed_before[owner_id].append((p.transfer.block_number, p.transfer.amount, counts))

        by_key = {(p.transfer.tx_hash, p.transfer.log_index, p.transfer.block_hash): p for p in placed}
        credited_rows: dict[tuple[str, int], Payment] = {}
        for row in payments:
            found = by_key.get((row.tx_hash, row.log_index, row.block_hash))
            if found is not None and not row.orphaned:
                credited_rows[found.identity] = row

        def effective(p: PlacedTransfer) -> Decision | None:
            owner = self.attached.get(p.identity) or self.owner.get(p.identity)
            if owner is not None:
                return ("invoice", owner)
            decision = self.decisions[(p.identity, p.transfer.block_hash)]
            if decision is not None and decision[0] == "either":
                row = credited_rows.get(p.identity)
                if row is not None and row.invoice_id == decision[1]:
                    self.owner[p.identity] = decision[1]
                    return ("invoice", decision[1])
                return ("inbox", "released amount")
            return decision

        credited: dict[str, list[tuple[PlacedTransfer, bool]]] = defaultdict(list)
        for p in placed:
            decision = effective(p)
            if decision is not None and decision[0] == "invoice":
                credited[decision[1]].append((p, p.identity in self.attached))

        # (a) and (b): every credit comes from a stored, canonical block, once, to the right invoice.
        ahead: set[str] = set()
        live_pay: dict[tuple[str, int], Payment] = {}
        for row in payments:
            if row.orphaned:
                continue
            if cursor is None or row.block_number > cursor:
                ahead.add(row.invoice_id)  # stored by a rescan ahead of the scanner: judged once scanned
                continue
            p = by_key.get((row.tx_hash, row.log_index, row.block_hash))
            _expect(
                p is not None,
                f"(b) payment {row.tx_hash[:12]}:{row.log_index} of {row.invoice_id} counts from block "
                f"{row.block_number} {row.block_hash[:12]}, which is not the stored canonical block "
                f"{self.view.get(row.block_number, '?')[:12]}",
            )
            assert p is not None
            decision = effective(p)
            _expect(
                decision == ("invoice", row.invoice_id),
                f"(a) transfer {row.tx_hash[:12]}:{row.log_index} ({row.amount}) is credited to {row.invoice_id}; "
                f"the model says {decision}",
            )
            _expect(p.identity not in live_pay, f"(a) transfer {p.identity} is credited twice")
            live_pay[p.identity] = row
        live_inbox = {
            (r.tx_hash, r.log_index, r.block_hash): r
            for r in inbox
            if not r.orphaned and cursor is not None and r.block_number <= cursor
        }
        for p in placed:
            decision = effective(p)
            t = p.transfer
            if decision is None:
                continue
            if decision[0] == "invoice":
                row = live_pay.get(p.identity)
                _expect(
                    row is not None and row.block_hash == t.block_hash,
                    f"(a) transfer {t.tx_hash[:12]}:{t.log_index} ({t.amount} {t.asset_key[:6]} in block "
                    f"{t.block_number}) should be credited to {decision[1]}, but is "
                    f"{'missing' if row is None else 'credited from another block'}",
                )
            else:
                row_u = live_inbox.get((t.tx_hash, t.log_index, t.block_hash))
                _expect(
                    row_u is not None and row_u.attached_invoice_id is None,
                    f"(a) transfer {t.tx_hash[:12]}:{t.log_index} ({t.amount}, block {t.block_number}) should be "
                    f"in the inbox ({decision[1]}), but is not",
                )
        for key, row_u in live_inbox.items():
            if row_u.attached_invoice_id is not None:
                continue
            p = by_key.get(key)
            _expect(
                p is not None and effective(p) is not None and effective(p)[0] == "inbox",  # type: ignore[index]
                f"(a) inbox row {row_u.tx_hash[:12]}:{row_u.log_index} ({row_u.reason}) is not a transfer "
                f"the model puts in the inbox ({None if p is None else effective(p)})",
            )

        # (c), (d), (f) per invoice
        ev_by_invoice: dict[str, list[CallbackEvent]] = defaultdict(list)
        for ev in events:
            if ev.invoice_id is not None:
                ev_by_invoice[ev.invoice_id].append(ev)
        hist_by_invoice: dict[str, list[StatusHistory]] = defaultdict(list)
        for h in history:
            hist_by_invoice[h.invoice_id].append(h)
        top = max(self.view) if self.view else None
        top_time = self.chain.by_hash[self.view[top]].timestamp if top is not None else None
        for inv in self.invoices:
            row_i = invoices[inv.id]
            mine = credited.get(inv.id, [])
            keys = {(p.identity, p.transfer.block_hash) for p, _ in mine}
            ids = {p.identity for p, _ in mine}
            if inv.keys - keys:
                inv.reverted_ever = True
            inv.keys |= keys
            inv.seen_ids |= ids
            if inv.id not in ahead:
                self._check_invoice(inv, row_i, mine, tip, top_time)
            self._check_events(inv, row_i, ev_by_invoice[inv.id], hist_by_invoice[inv.id])

    def _check_invoice(
        self,
        inv: MInvoice,
        row: Invoice,
        mine: list[tuple[PlacedTransfer, bool]],
        tip: int,
        top_time: datetime | None,
    ) -> None:
        by_block = top_time is not None and top_time >= inv.expires_at
        by_clock = self.now >= inv.expires_at and not self.on("expiry_lag")
        if inv.must_expire:
            states = frozenset({True})
        elif by_block or by_clock:
            states = frozenset({True, False})
        else:
            states = frozenset({False})
        candidates = [
            expected_invoice(inv, mine, tip, policy, expiry_states=states)
            for policy in self.policies[inv.policy_from :]
        ]
        match = [
            e
            for e in candidates
            if row.status in e.statuses and row.amount_paid == e.paid and row.amount_confirmed == e.confirmed
        ]
        _expect(
            bool(match),
            f"(c) {inv.id} ({inv.strategy}, {inv.amount}) is {row.status} with paid {row.amount_paid} / confirmed "
            f"{row.amount_confirmed}; the model expects "
            + " or ".join(f"{sorted(e.statuses)} with {e.paid} / {e.confirmed}" for e in candidates),
        )
        e = match[0]
        if row.status == "COMPLETED":
            inv.completed = True
        flags = set(row.flags)
        unknown = flags - {"overpaid", "paid_late", "marked_paid", "reverted"}
        _expect(not unknown, f"(c) {inv.id} has unknown flags {sorted(unknown)}")
        _expect(("marked_paid" in flags) == inv.marked_paid, f"(c) {inv.id} marked_paid flag is {sorted(flags)}")
        inv.overpaid_ever |= e.overpaid_required
        inv.late_ever |= e.late_required
        if e.overpaid_required:
            _expect("overpaid" in flags, f"(c) {inv.id} is overpaid ({e.confirmed} > {inv.amount}) without the flag")
        _expect("overpaid" not in flags or inv.overpaid_ever, f"(c) {inv.id} is flagged overpaid; never was")
        if e.late_required:
            _expect("paid_late" in flags, f"(c) {inv.id} has a late payment without the paid_late flag")
        _expect("paid_late" not in flags or inv.late_ever, f"(c) {inv.id} is flagged paid_late; never paid late")
        missing = inv.seen_ids - {p.identity for p, _ in mine}
        if missing:
            _expect("reverted" in flags, f"(c) {inv.id} lost credited transfers {sorted(missing)} without `reverted`")
        _expect("reverted" not in flags or inv.reverted_ever, f"(c) {inv.id} is flagged reverted; nothing was")

    def _check_events(
        self, inv: MInvoice, row: Invoice, events: list[CallbackEvent], history: list[StatusHistory]
    ) -> None:
        shown = (row.status, tuple(sorted(row.flags)), row.amount_paid)
        _expect(
            row.status_version >= inv.version,
            f"(d) {inv.id} status_version went back {inv.version} -> {row.status_version}",
        )
        if inv.shown and shown != inv.shown:
            _expect(
                row.status_version > inv.version,
                f"(d) {inv.id} changed {inv.shown} -> {shown} without a new status_version ({row.status_version})",
            )
        inv.shown, inv.version = shown, row.status_version
        versions = [ev.status_version for ev in events]
        _expect(
            bool(events) and events[0].type == "invoice.created", f"(f) {inv.id} has no invoice.created event first"
        )
        if self.on("flag_only_events"):
            _expect(
                versions == list(range(1, len(versions) + 1)) and row.status_version == len(versions),
                f"(d) {inv.id} event versions {versions}, invoice at {row.status_version}: gaps or repeats",
            )
        else:
            _expect(
                all(a < b for a, b in itertools.pairwise(versions)) and versions[-1] <= row.status_version,
                f"(d) {inv.id} event versions {versions} are not strictly increasing (invoice at {row.status_version})",
            )
        last = json.loads(events[-1].body)["data"]
        if self.on("remine_completed"):  # every change of the paid amount sends an event (defect 6)
            _expect(
                (last["status"], Decimal(last["amount_paid"])) == (row.status, Decimal(_dec(row.amount_paid))),
                f"(d) {inv.id} is {row.status} with {_dec(row.amount_paid)} paid, but its last event "
                f"({events[-1].type}) told the merchant {last['status']} with {last['amount_paid']}",
            )
        if self.on("flag_only_events"):  # every change of the flags sends an event (defect 13)
            _expect(
                sorted(last["flags"]) == sorted(row.flags),
                f"(d) {inv.id} has flags {sorted(row.flags)}, but its last event ({events[-1].type}) said "
                f"{sorted(last['flags'])}",
            )
        by_version: dict[int, list[str]] = defaultdict(list)
        for ev in events:
            by_version[ev.status_version].append(ev.type)
        for before, after in itertools.pairwise(history):
            if after.status == before.status:
                continue
            wanted = STATUS_EVENTS[after.status]
            _expect(
                by_version.get(after.status_version, []).count(wanted) == 1,
                f"(f) {inv.id} moved {before.status} -> {after.status} (version {after.status_version}) "
                f"without exactly one {wanted} event; events {dict(by_version)}",
            )
        status_types = set(STATUS_EVENTS.values()) - {"invoice.payment_reverted"}
        status_events = sum(1 for ev in events if ev.type in status_types)
        status_changes = sum(
            1 for b, a in itertools.pairwise(history) if a.status != b.status and a.status != "PENDING"
        )
        _expect(
            status_events == status_changes,
            f"(f) {inv.id} has {status_events} status events for {status_changes} status changes",
        )

    def teardown(self) -> None:
        self.scanner.close()


def _dec(amount: int) -> str:
    whole, frac = divmod(amount, UNIT)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ModelFailure(message)


# --- running it ---------------------------------------------------------------------------------


def machine_class(name: str, url: str, switches: frozenset[str], **attributes: Any) -> type[MoneyModel]:
    """A ``MoneyModel`` subclass bound to one engine on ``url`` (and its commit counter)."""
    # The production engine pings PostgreSQL on every checkout; the model's thousands of short
    # transactions on one local server do not need that (it costs about a tenth of the run).
    engine = make_engine(url) if url.startswith("sqlite") else create_engine(normalize_url(url))
    return type(
        name,
        (MoneyModel,),
        {"engine": engine, "commits": CommitCounter(engine), "db_url": url, "switches": switches, **attributes},
    )


@dataclass
class RunResult:
    """How a run went: examples executed, seconds, the seed used."""

    examples: int
    seconds: float
    seed: int


def run_model(
    url: str,
    *,
    examples: int,
    steps: int = 30,
    seed_value: int | None = None,
    switches: frozenset[str] | None = None,
    verbose: bool = False,
    shrink: bool = True,
    progress_every: int = 0,
) -> RunResult:
    """Run the machine ``examples`` times on the migrated database at ``url``; print the seed on failure."""
    chosen = seed_value if seed_value is not None else random.SystemRandom().randrange(2**32)
    machine = machine_class(
        "MoneyModelRun",
        url,
        switches if switches is not None else enabled_switches(),
        examples=0,
        progress_every=progress_every,
    )
    engine = machine.engine
    config = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
        verbosity=Verbosity.verbose if verbose else Verbosity.normal,
    )
    started = time.monotonic()
    try:
        run_state_machine_as_test(seed(chosen)(machine), settings=config)
    except BaseException:
        print(
            f"\nmodel-based test FAILED: seed {chosen} (replay: PAYWATCH_MODEL_SEED={chosen} "
            f"PAYWATCH_MODEL_ENABLE={','.join(sorted(machine.switches)) or '(none)'}); the shrunk steps are above"
        )
        raise
    finally:
        engine.dispose()
    return RunResult(machine.examples, time.monotonic() - started, chosen)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@pytest.fixture(scope="module", params=database_params())
def model_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per backend for the whole run; each example empties it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('model') / 'paywatch.db'}"
        upgrade(url)
        yield url
        return
    yield from fresh_postgres_database()


#: Examples per database in the suite: PostgreSQL well under two minutes on a quiet 2-core machine
#: (SQLite well under one). It was 200; bench/model_check.py runs the big run (5,000).
DEFAULT_EXAMPLES = 100


@pytest.mark.slow
def test_money_model(model_db: str) -> None:
    examples = _env_int("PAYWATCH_MODEL_EXAMPLES", DEFAULT_EXAMPLES)
    seed_env = os.environ.get("PAYWATCH_MODEL_SEED")
    result = run_model(
        model_db,
        examples=examples,
        steps=_env_int("PAYWATCH_MODEL_STEPS", 25),
        seed_value=int(seed_env) if seed_env else None,
        shrink=os.environ.get("PAYWATCH_MODEL_SHRINK", "1") != "0",
    )
    print(f"\nmodel: {result.examples} examples in {result.seconds:.1f} s (seed {result.seed})")
    assert result.examples >= examples


def test_switches_parse() -> None:
    assert enabled_switches("") == ON_BY_DEFAULT == frozenset(SWITCHES)  # every defect is fixed: all on
    assert enabled_switches("all") == frozenset(SWITCHES)
    assert {"dust", "policy"} <= enabled_switches("dust, policy")
    with pytest.raises(ValueError, match="unknown switch"):
        enabled_switches("nonsense")


def test_scripted_chain_reorg_keeps_identity() -> None:
    """The scripted chain: a re-mined token transfer keeps its tx hash and position; a dropped one is gone."""
    chain = ScriptedChain("x", T0, configured={"native", "TOKEN"})
    kept = chain.send([Leg("A", "TOKEN", 5), Leg("B", "TOKEN", 6)])
    dropped = chain.send([Leg("A", "native", 7)])
    chain.mine(T0 + timedelta(seconds=3))
    old = chain.head
    result = chain.reorg(1, {kept.tx_hash: 1, dropped.tx_hash: None}, extra=1, extra_time=T0 + timedelta(seconds=9))
    assert [b.number for b in result.added] == [1, 2] and old.hash not in {b.hash for b in chain.blocks}
    scanned = chain.fetch_range(1, 2, lambda _a: True)
    assert [(t.tx_hash, t.log_index, t.block_number) for t in scanned.transfers] == [
        (kept.tx_hash, 0, 2),
        (kept.tx_hash, 1, 2),
    ]
    assert chain.blocks[2].parent_hash == chain.blocks[1].hash
    with pytest.raises(ChainError):
        chain.fetch_range(0, 5, lambda _a: True)


def test_scripted_chain_block_index_keeps_position() -> None:
    """``index_mode="block"``: a re-mined token transfer gets another log index but keeps its ``tx_position``,
    as the EVM adapter reports it from the receipt; a Tron-style (``"tx"``) transfer carries none."""
    chain = ScriptedChain("x", T0, configured={"native", "TOKEN"}, index_mode="block")
    other = chain.send([Leg("A", "OTHER", 1)])  # an unlisted token's log, numbered in the block all the same
    kept = chain.send([Leg("B", "TOKEN", 5), Leg("C", "TOKEN", 6)])
    chain.mine(T0 + timedelta(seconds=3))
    before = chain.fetch_range(1, 1, lambda _a: True).transfers
    assert [(t.log_index, t.position) for t in before] == [(1, 0), (2, 1)]
    chain.reorg(1, {other.tx_hash: None, kept.tx_hash: 0}, extra=0, extra_time=T0 + timedelta(seconds=3))
    after = chain.fetch_range(1, 1, lambda _a: True).transfers
    assert [(t.tx_hash, t.log_index, t.position) for t in after] == [(kept.tx_hash, 0, 0), (kept.tx_hash, 1, 1)]
    tron = ScriptedChain("x", T0, configured={"TOKEN"})
    tron.send([Leg("B", "TOKEN", 5)])
    tron.mine(T0 + timedelta(seconds=3))
    assert [t.tx_position for t in tron.fetch_range(1, 1, lambda _a: True).transfers] == [None]


def _machine(db_url: str, switches: frozenset[str] = frozenset()) -> MoneyModel:
    return machine_class("MoneyModelDirect", db_url, switches)()


def test_the_model_sees_a_false_credit_and_a_wrong_amount(db_url: str) -> None:
    """The checker is not vacuous: a credit from a block that is not the stored one, and a wrong sum, both fail."""
    state = _machine(db_url)
    try:
        state.open_store(accept_late=False, late_window=300, tolerance="0")
        state.create(strategy="address", asset="USDT", units=5, expires_in=600)
        state.pay(which=0, kind="partial")
        state.mine(count=1)
        state.scan()
        state.money_is_right()
        with session_scope(state.engine) as s:
            row = s.exec(select(Payment)).one()
            row.block_hash = "0x" + "ab" * 32  # as if credited from a block that was replaced
            s.add(row)
        with pytest.raises(ModelFailure, match=r"^\(b\)"):
            state.money_is_right()
        with session_scope(state.engine) as s:
            row = s.exec(select(Payment)).one()
            row.block_hash = state.chain.blocks[row.block_number].hash
            s.add(row)
            invoice = s.exec(select(Invoice)).one()
            invoice.amount_paid += 1
            s.add(invoice)
        with pytest.raises(ModelFailure, match=r"^\(c\)"):
            state.money_is_right()
    finally:
        state.teardown()
        state.engine.dispose()


def test_the_model_sees_a_missing_event(db_url: str) -> None:
    """A status change whose outbox row is missing fails (f)."""
    state = _machine(db_url)
    try:
        state.open_store(accept_late=False, late_window=300, tolerance="0")
        state.create(strategy="memo", asset="TRX", units=5, expires_in=600)
        state.pay(which=0, kind="exact")
        state.mine(count=3)
        state.scan()
        state.money_is_right()
        assert state.db[state.invoices[0].id].status == "COMPLETED"
        with session_scope(state.engine) as s:
            event = s.exec(select(CallbackEvent).where(CallbackEvent.type == "invoice.completed")).one()
            s.delete(event)
        with pytest.raises(ModelFailure, match=r"^\(f\)"):
            state.money_is_right()
    finally:
        state.teardown()
        state.engine.dispose()


# --- the shortest failing sequences the model found, one per known defect -----------------------


class _Draws:
    """Stands in for ``st.data()`` when a recorded sequence is replayed: hands out fixed draws in order."""

    def __init__(self, values: list[int | None]) -> None:
        self.values = list(values)

    def draw(self, strategy: object, label: object = None) -> int | None:
        return self.values.pop(0) if self.values else None


Step = tuple[str, dict[str, Any]]


def _s(name: str, **kw: Any) -> Step:
    return (name, kw)


_STORE = _s("open_store", accept_late=False, late_window=0, tolerance="0")
_USDT_ADDRESS = _s("create", asset="USDT", expires_in=600, strategy="address", units=5)

#: switch -> (issue 9 defect, the switches the replay needs, the steps). Each fails today (ModelFailure)
#: and must pass once its defect is fixed; they are strict xfails so that a fix shows up as XPASS,
#: telling the lead to drop the mark and turn the switch on by default.
KNOWN_DEFECT_SEQUENCES: dict[str, tuple[str, tuple[str, ...], list[Step]]] = {
    "rescan_ahead": (
        "1: a rescan-tx ahead of the cursor stays credited after a reorg drops the transaction",
        ("rescan_ahead",),
        [
            _STORE,
            _USDT_ADDRESS,
            _s("pay", kind="exact", which=0),
            _s("mine", count=1),
            _s("rescan_tx", which=0),
            _s("reorg", depth=1, extra=0, data=[None]),
            _s("expiry_sweep"),
        ],
    ),
    "evm_index": (
        "1: a token transfer stored ahead of the cursor and re-mined with another block-wide log index counts twice",
        ("evm_index", "rescan_ahead"),
        [
            _STORE,
            _USDT_ADDRESS,
            _USDT_ADDRESS,
            _s("pay_two_in_one_block", first=0, second=1, batch=False),
            _s("rescan", lo=0, span=1),
            _s("reorg", depth=1, extra=1, data=[1, 0]),
            _s("mine", count=1),
            _s("scan"),
        ],
    ),
    "amount_reuse": (
        "3: a unique amount is issued again while the marked-paid invoice can still receive it",
        ("amount_reuse",),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="amount", units=5),
            _s("mark_paid", which=0),
            _s("create", asset="USDT", expires_in=120, strategy="amount", units=5),
        ],
    ),
    "reorg_attached": (
        "4: an attached transfer re-mined by a reorg loses its credit",
        ("reorg_attached",),
        [
            _STORE,
            _USDT_ADDRESS,
            _s("pay", kind="wrong_asset", which=0),
            _s("mine", count=1),
            _s("scan"),
            _s("create", asset="TRX", expires_in=600, strategy="address", units=5),
            _s("attach_unmatched", row=0, which=1),
            _s("reorg", depth=1, extra=1, data=[1]),
            _s("scan"),
        ],
    ),
    "expiry_lag": (
        "5: the sweep expires an invoice by the wall clock while no scanned block has reached its expiry",
        ("expiry_lag",),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=400),
            _s("expiry_sweep"),
        ],
    ),
    "remine_completed": (
        "6: a COMPLETED invoice's payment reorged out and re-mined comes back without an event",
        ("remine_completed",),
        [
            _STORE,
            _USDT_ADDRESS,
            _s("pay", kind="exact", which=0),
            _s("mine", count=3),
            _s("scan"),
            _s("reorg", depth=3, extra=1, data=[1]),
            _s("scan"),
        ],
    ),
    "attach_late": (
        "9: attaching a late transfer credits nothing",
        ("attach_late",),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=400),
            _s("pay", kind="exact", which=0),
            _s("mine", count=1),
            _s("scan"),
            _s("attach_unmatched", row=0, which=0),
        ],
    ),
    "memo_variants": (
        "10: a memo paid in lower case is not matched",
        ("memo_variants",),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="memo", units=5),
            _s("pay", kind="memo_lower", which=0),
            _s("mine", count=1),
            _s("scan"),
        ],
    ),
    "pay_cancelled": (
        "12: a payment to a cancelled invoice is credited to it instead of the inbox",
        ("pay_cancelled",),
        [
            _s("open_store", accept_late=False, late_window=300, tolerance="0"),
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("cancel", which=0),
            _s("pay", kind="exact", which=0),
            _s("mine", count=1),
            _s("scan"),
        ],
    ),
    "flag_only_events": (
        "13: overpaid added after COMPLETED moves status_version without an event",
        ("flag_only_events",),
        [
            _STORE,
            _USDT_ADDRESS,
            _s("pay", kind="exact", which=0),
            _s("mine", count=3),
            _s("scan"),
            _s("pay", kind="exact", which=0),
            _s("mine", count=1),
            _s("scan"),
            _s("mine", count=2),
            _s("scan"),
        ],
    ),
    "inbox_stays/late_window_widened": (
        "new: after the late window was widened, a rescan credited a transfer that already waited in the "
        "inbox (it was in both places; money must leave the inbox only by an admin's attach)",
        ("policy", "rescan_ahead"),
        [
            _s("open_store", accept_late=False, late_window=0, tolerance="0"),
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=120),
            _s("pay_and_confirm", kind="exact", which=0),
            _s("change_policy", accept_late=False, late_window=300, tolerance="0"),
            _s("rescan", lo=0, span=1),
        ],
    ),
    "cancel/late_payment_received": (
        "new: cancelling an EXPIRED invoice that received a late payment (which does not count) is refused: "
        "the money is there",
        ("policy",),
        [
            _s("open_store", accept_late=False, late_window=0, tolerance="0"),
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=120),
            _s("change_policy", accept_late=False, late_window=300, tolerance="0"),
            _s("pay_and_confirm", kind="exact", which=0),
            _s("cancel", which=0),
        ],
    ),
    "clock_high/reorg_below_expiry": (
        "found by this test (seed 3943409075, a stress run): a reorg moved the cursor, and with it the chain "
        "clock, back below an expired invoice's expiry, and orphaning its payment re-opened it "
        "(PARTIALLY_EXPIRED back to PENDING; the chain clock must never go back, network_states.clock_high)",
        ("expiry_lag",),  # as in every run: the sweep expires by the scanned block's time
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("pay", kind="partial", which=0),
            _s("mine", count=1),
            _s("scan"),
            _s("advance_time", seconds=400),
            _s("mine", count=1),  # block 2, past the expiry
            _s("scan"),
            _s("expiry_sweep"),  # PARTIALLY_EXPIRED by block time
            _s("reorg", depth=2, extra=1, data=[None]),  # blocks 1 and 2 replaced, the payment dropped
            _s("scan"),  # the cursor goes back to block 0, before the expiry: EXPIRED, not PENDING
        ],
    ),
    "dust": (
        "14: one base unit is credited and moves the invoice to PARTIAL",
        ("dust",),
        [_STORE, _USDT_ADDRESS, _s("pay", kind="dust", which=0), _s("mine", count=1), _s("scan")],
    ),
    "credited_stays/rescan": (
        "new: a rescan after a completed amount invoice released its amount also puts its credited transfer in "
        "the inbox",
        ("credited_stays",),
        [
            _s("open_store", accept_late=False, late_window=300, tolerance="0"),
            _s("create", asset="USDT", expires_in=600, strategy="amount", units=5),
            _s("pay", kind="exact", which=0),
            _s("mine", count=3),
            _s("scan"),
            _s("rescan_tx", which=0),
        ],
    ),
    "evm_index/attached_remined_elsewhere": (
        "found by this test: an attached late transfer re-mined with another block-wide log index (an "
        "unlisted token's log before it was dropped) is missing from its invoice, because the scripted "
        "chain did not report tx_position as the EVM adapter does (the identity changed, so the code put "
        "the re-mined transfer in the inbox; the scripted chain was wrong, not the ledger)",
        ("evm_index", "reorg_attached", "attach_late", "credited_stays"),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=400),
            _s("pay", kind="fake_token", which=0),  # block-wide log index 0: the partial payment is 1
            _s("pay", kind="partial", which=0),
            _s("mine", count=1),
            _s("scan"),  # late beyond the window: the inbox
            _s("attach_unmatched", row=0, which=0),  # an operator's late attach
            _s("reorg", depth=1, extra=1, data=[None, 0]),  # the fake token is dropped: the payment's index is 0
            _s("scan"),  # the payment is restored to the invoice it was attached to
        ],
    ),
    "evm_index/attached_stale_row": (
        "found by this test (as reported, not shrunk): the same, with the attach made from an inbox row whose "
        "block a reorg had already replaced, before the scanner saw the reorg",
        ("evm_index", "reorg_attached", "attach_late", "expiry_lag"),
        [
            _STORE,
            *[_s("expiry_sweep")] * 5,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("advance_time", seconds=400),
            _s("expiry_sweep"),
            _s("expiry_sweep"),
            _s("pay", kind="fake_token", which=0),
            _s("pay_and_confirm", kind="partial", which=0),
            _s("expiry_sweep"),
            _s("reorg", depth=7, extra=1, data=[0, 0]),
            _s("reorg", depth=7, extra=0, data=[None, 0]),
            _s("attach_unmatched", row=0, which=0),
            _s("scan_one_step"),
        ],
    ),
    "credited_stays/late_remine": (
        "new: a credited transfer re-mined past the late window goes to the inbox; its credit is lost, and "
        "attaching it back is refused ('already credited')",
        ("credited_stays",),
        [
            _STORE,
            _s("create", asset="USDT", expires_in=120, strategy="address", units=5),
            _s("pay", kind="partial", which=0),
            _s("mine", count=1),
            _s("scan"),
            _s("advance_time", seconds=400),
            _s("reorg", depth=1, extra=1, data=[1]),
            _s("scan"),
        ],
    ),
}


def replay(db_url: str, switches: tuple[str, ...], steps: list[Step]) -> None:
    """Run recorded steps on a fresh machine, checking the model after each, as hypothesis does."""
    state = _machine(db_url, frozenset(switches))
    try:
        for name, kw in steps:
            args = {**kw, "data": _Draws(kw["data"])} if "data" in kw else kw
            getattr(state, name)(**args)
            state.money_is_right()
    finally:
        state.teardown()
        state.engine.dispose()


@pytest.mark.parametrize("name", sorted(KNOWN_DEFECT_SEQUENCES))
def test_known_defect_sequence(name: str, db_url: str, request: pytest.FixtureRequest) -> None:
    defect, switches, steps = KNOWN_DEFECT_SEQUENCES[name]
    if not set(switches) <= ON_BY_DEFAULT:
        request.applymarker(pytest.mark.xfail(raises=ModelFailure, strict=True, reason=f"issue 9 defect {defect}"))
    replay(db_url, switches, steps)
