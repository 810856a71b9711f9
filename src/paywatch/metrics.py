"""Prometheus metrics. Counters live in this process; lag and queue depth are read from the
database at scrape time so that any API replica reports them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig
from paywatch.health import network_lags
from paywatch.redact import render_endpoint
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent

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


class DatabaseCollector(Collector):
    """Head lag per network (blocks and seconds) and the callback queue depth, read at scrape time."""

    def __init__(self, engine: Engine, config: AppConfig, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        blocks = GaugeMetricFamily("paywatch_head_lag_blocks", "Tip minus scan cursor", labels=["network"])
        seconds = GaugeMetricFamily(
            "paywatch_head_lag_seconds", "Age of the newest scanned block while the tip is ahead", labels=["network"]
        )
        queue = GaugeMetricFamily(
            "paywatch_callback_queue_depth", "Callback events not yet delivered", labels=["state"]
        )
        with session_scope(self._engine) as session:
            for lag in network_lags(session, self._config, self._clock()):
                if lag.lag_blocks is not None:
                    blocks.add_metric([lag.network], lag.lag_blocks)
                if lag.lag_seconds is not None:
                    seconds.add_metric([lag.network], lag.lag_seconds)
            rows = session.exec(
                select(CallbackEvent.state, func.count())
                .where(col(CallbackEvent.state) != "delivered")
                .group_by(col(CallbackEvent.state))
            ).all()
            for state, count in rows:
                queue.add_metric([state], count)
        yield blocks
        yield seconds
        yield queue


def render(extra: Collector | None = None) -> bytes:
    """The text exposition of this process's metrics (plus ``extra`` collected just now)."""
    if extra is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(extra)
    return generate_latest(REGISTRY) + generate_latest(registry)
