"""Chain adapters: one per chain family, all behind :class:`paywatch.chains.base.ChainAdapter`."""

#: The default cap on one RPC response body (``max_response_bytes`` in networks.yaml); here rather
#: than in :mod:`paywatch.chains.body_limit` so that loading the configuration imports no HTTP client.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
