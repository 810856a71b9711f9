"""Pick the adapter for a network's chain family."""

from __future__ import annotations

from paywatch.chains.base import ChainAdapter
from paywatch.config import NetworkConfig


def make_adapter(network: NetworkConfig) -> ChainAdapter:
    """The production adapter for ``network`` (imports are lazy so one family's deps don't load the other's)."""
    if network.family == "evm":
        from paywatch.chains.evm import EvmAdapter

        return EvmAdapter(network)
    if network.family == "utxo":
        from paywatch.chains.utxo import UtxoAdapter

        return UtxoAdapter(network)
    from paywatch.chains.tron import TronAdapter

    return TronAdapter(network)
