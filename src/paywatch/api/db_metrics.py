"""The gauges of ``/metrics`` that come from the database (head lag, callback queue depth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from paywatch.config import AppConfig
from paywatch.health import network_lags
from paywatch.store.db import session_scope
from paywatch.store.models import CallbackEvent


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
