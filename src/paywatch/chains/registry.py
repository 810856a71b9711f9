"""Pick the adapter for a network's chain family."""

from __future__ import annotations

from paywatch.chains.base import ChainAdapter
from paywatch.config import NetworkConfig

QUICK_TIMEOUT = 5.0


def make_adapter(network: NetworkConfig, *, quick: bool = False) -> ChainAdapter:
    """The production adapter for ``network`` (imports are lazy so one family's deps don't load the other's).

    ``quick``: one attempt per request with a short timeout, for a read that must not hold up an
    API request (the tip recorded on a new invoice); the scanners keep the patient defaults.
    """
    if network.family == "evm":
        from paywatch.chains.evm import EvmAdapter

        return EvmAdapter(network, attempts=1, timeout=QUICK_TIMEOUT) if quick else EvmAdapter(network)
    if network.family == "utxo":
        from paywatch.chains.utxo import UtxoAdapter

        return UtxoAdapter(network)
    from paywatch.chains.tron import TronAdapter
    from paywatch.chains.tron_http import RetryPolicy

    if quick:
        return TronAdapter(network, policy=RetryPolicy(attempts=1, timeout=QUICK_TIMEOUT))
    return TronAdapter(network)
