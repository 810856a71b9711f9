"""Prometheus metrics: the counters of this process and the text exposition.

Lag and queue depth are read from the database at scrape time so that any API replica reports
them: that collector is :class:`paywatch.api.db_metrics.DatabaseCollector`. This module imports
no storage, so the chain adapters that count their RPC calls here never reach the store.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.registry import Collector

from paywatch.redact import render_endpoint

REGISTRY = CollectorRegistry(auto_describe=True)

BLOCKS_SCANNED = Counter("paywatch_blocks_scanned", "Blocks scanned", ["network"], registry=REGISTRY)
TRANSFERS = Counter("paywatch_transfers", "Transfers to watched addresses", ["network", "result"], registry=REGISTRY)
RPC_CALLS = Counter("paywatch_rpc_calls", "RPC calls by endpoint", ["network", "endpoint"], registry=REGISTRY)
RPC_ERRORS = Counter("paywatch_rpc_errors", "RPC errors by endpoint", ["network", "endpoint"], registry=REGISTRY)
DELIVERIES = Counter("paywatch_callback_deliveries", "Callback delivery attempts", ["result"], registry=REGISTRY)
TRANSITIONS = Counter("paywatch_status_transitions", "Invoice status transitions", ["status"], registry=REGISTRY)
SCAN_ERRORS = Counter("paywatch_scan_errors", "Scan steps that failed", ["network"], registry=REGISTRY)


def endpoint_label(url: str) -> str:
    """An RPC URL as a metric label: :func:`paywatch.redact.render_endpoint` (never the URL itself)."""
    return render_endpoint(url)


def count_rpc(network: str, url: str, *, failed: bool) -> None:
    """Count one RPC request to ``url`` (and its failure: transport error, timeout, HTTP or node error)."""
    endpoint = endpoint_label(url)
    RPC_CALLS.labels(network, endpoint).inc()
    if failed:
        RPC_ERRORS.labels(network, endpoint).inc()


def render(extra: Collector | None = None) -> bytes:
    """The text exposition of this process's metrics (plus ``extra`` collected just now)."""
    if extra is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(extra)
    return generate_latest(REGISTRY) + generate_latest(registry)
