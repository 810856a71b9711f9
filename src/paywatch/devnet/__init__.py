"""A local EVM devnet (anvil) for the demo, the tests and the benchmarks: never for real funds."""
