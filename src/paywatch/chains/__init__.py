"""Chain adapters: one per chain family, all behind :class:`paywatch.chains.base.ChainAdapter`."""
