"""Mempool sightings for networks whose adapter is a MempoolSource (the utxo family).

One :meth:`MempoolWatcher.poll`, run by the scanner once it has caught up with the tip:

1. the adapter reads the pool's txids and the node's best block, and the transactions not read
   before (at most ``mempool_max_per_poll``): the whole pool is never loaded;
2. what those pay to watched addresses is matched and recorded as mempool payments: the invoice
   moves to WAITING_FOR_CONFIRMATIONS (or PARTIAL) with 0 confirmations and the events go out;
   a mempool payment is never confirmed, it becomes a block payment when the scanner meets it;
3. if the node's best block is the one the scanner stored last, every mempool payment whose
   transaction is no longer in the pool was replaced, double-spent or evicted: it is orphaned,
   its invoice moves back and ``invoice.payment_reverted`` goes out. Otherwise a newer block may
   hold it and the check waits for the next poll.

Unmatched mempool transfers are not put in the inbox: the block scan records them once mined.
The set of txids already read lives in memory; after a restart the pool is read again, up to the
cap per poll, and recording is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from paywatch.chains.base import MempoolSource
from paywatch.config import NetworkConfig
from paywatch.domain.matching import WatchIndex
from paywatch.ledger import Ledger
from paywatch.store.db import session_scope
from paywatch.store.models import NetworkState


@dataclass(frozen=True)
class MempoolResult:
    """What one poll did: transactions read, payments matched, invoices whose payments left the pool."""

    read: int
    matched: int
    dropped: frozenset[str]
    checked_drops: bool


class MempoolWatcher:
    """Polls one network's mempool into the ledger; see the module docstring."""

    def __init__(self, network: NetworkConfig, source: MempoolSource, engine: Engine, ledger: Ledger) -> None:
        self.network = network
        self.source = source
        self.engine = engine
        self.ledger = ledger
        self.known: set[str] = set()

    def poll(self, index: WatchIndex, now: datetime) -> MempoolResult:
        view = self.source.mempool_view(self.known, index.is_watched, now, self.network.mempool_max_per_poll)
        matches, _unmatched = index.match_all(list(view.transfers))
        dropped: set[str] = set()
        with session_scope(self.engine) as session:
            if matches:
                self.ledger.record_matches(session, matches, now)
            state = session.get(NetworkState, self.network.name)
            checked = state is not None and state.cursor_hash == view.best_block
            if checked:
                dropped = self.ledger.drop_from_mempool(session, self.network.name, view.txids, now)
        self.known = (self.known & view.txids) | set(view.read)
        return MempoolResult(len(view.read), len(matches), frozenset(dropped), checked)
