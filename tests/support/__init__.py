"""Shared test helpers: local nodes, proxies, receivers and harnesses."""
