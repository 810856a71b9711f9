"""Opt-in: the production adapter against the public Nile testnet (``PAYWATCH_TRON_LIVE=1``).

Optional: ``TRONGRID_API_KEY`` (sent as TRON-PRO-API-KEY), ``PAYWATCH_TRON_LIVE_URL``
(default https://nile.trongrid.io). Reads a few solidified blocks; sends nothing.
"""

from __future__ import annotations

import os

import pytest

from paywatch.chains.base import NATIVE
from paywatch.chains.tron import TronAdapter
from paywatch.config import NetworkConfig

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.environ.get("PAYWATCH_TRON_LIVE") != "1", reason="set PAYWATCH_TRON_LIVE=1 to run"),
]

NILE_USDT = "TXLAQ63Xg1NAzckPwKHvzw7CSEmLMEqcdj"


@pytest.fixture(scope="module")
def nile() -> TronAdapter:
    network = NetworkConfig.model_validate(
        {
            "name": "nile",
            "family": "tron",
            "rpc_urls": [os.environ.get("PAYWATCH_TRON_LIVE_URL", "https://nile.trongrid.io")],
            "api_key": os.environ.get("TRONGRID_API_KEY") or None,
            "finality": "solidified",
            "requests_per_second": 3,
            "assets": {"TRX": {"native": True, "decimals": 6}, "USDT": {"contract": NILE_USDT, "decimals": 6}},
        }
    )
    return TronAdapter(network)


def test_nile_heights_and_solidified_blocks(nile: TronAdapter) -> None:
    heights = nile.heights()
    assert heights.final is not None and 0 < heights.final <= heights.tip
    assert heights.tip - heights.final < 200  # about 19 blocks behind on a healthy network
    calls = nile.http.calls
    scanned = nile.fetch_range(heights.final - 4, heights.final, lambda _address: True)
    assert nile.http.calls - calls == 10  # two calls per block
    numbers = [b.number for b in scanned.blocks]
    assert numbers == list(range(heights.final - 4, heights.final + 1))
    for parent, child in zip(scanned.blocks, scanned.blocks[1:], strict=False):
        assert child.parent_hash == parent.hash and child.timestamp > parent.timestamp
    assert nile.block_ref(heights.final).hash == scanned.blocks[-1].hash
    for transfer in scanned.transfers:
        assert transfer.asset_key in (NATIVE, NILE_USDT) and transfer.amount > 0
        assert transfer.to_address.startswith("T") and len(transfer.to_address) == 34
    tokens = [t for t in scanned.transfers if t.asset_key == NILE_USDT]
    if tokens:  # the same transfer through the single-transaction path
        again = nile.transaction_transfers(tokens[0].tx_hash, lambda _address: True)
        assert tokens[0] in again.transfers
