"""Say how far a network has been scanned: expiry is judged by the scanned blocks' time.

``Ledger.expiry_sweep`` expires an invoice only once its network's cursor block is stamped at or
after ``expires_at``; tests that expire invoices without a scanner record such a block here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from paywatch.store.db import session_scope
from paywatch.store.models import NetworkState, ScannedBlock


def scanned_until(engine: Engine, network: str, when: datetime, height: int = 1) -> None:
    """Move ``network``'s cursor to block ``height`` stamped ``when`` (the tip is left alone)."""
    with session_scope(engine) as s:
        state = s.get(NetworkState, network) or NetworkState(network=network)
        state.cursor_height, state.cursor_hash = height, f"0x{height:064x}"
        s.add(state)
        block = s.get(ScannedBlock, (network, height))
        if block is None:
            block = ScannedBlock(
                network=network, number=height, hash=state.cursor_hash, parent_hash="0x" + "0" * 64, timestamp=when
            )
        block.timestamp = when
        s.add(block)
