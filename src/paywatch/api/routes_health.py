"""Liveness and readiness: the database and each network's scan lag."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from paywatch.api.db_metrics import DatabaseCollector
from paywatch.api.deps import Context
from paywatch.health import network_lags
from paywatch.metrics import render
from paywatch.store.db import session_scope

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Database and per-network scan lag")
def healthz(context: Context) -> JSONResponse:
    now = context.clock()
    body: dict[str, Any] = {"status": "ok", "database": "ok", "networks": {}}
    try:
        with session_scope(context.engine) as session:
            session.connection().execute(text("SELECT 1"))
            lags = network_lags(session, context.config, now)
    except Exception as exc:  # the point of a health check is to report, not to raise
        body.update(status="error", database=f"error: {type(exc).__name__}")
        return JSONResponse(status_code=503, content=body)
    limit = context.config.settings.max_lag_seconds
    for lag in lags:
        stalled = lag.stalled(limit)
        body["networks"][lag.network] = {
            "tip": lag.tip,
            "cursor": lag.cursor,
            "lag_blocks": lag.lag_blocks,
            "lag_seconds": None if lag.lag_seconds is None else round(lag.lag_seconds, 1),
            "seconds_since_scan": None if lag.seconds_since_scan is None else round(lag.seconds_since_scan, 1),
            "last_error": lag.last_error,
            "status": "stalled" if stalled else ("unscanned" if lag.tip is None else "ok"),
        }
        if stalled:
            body["status"] = "degraded"
    return JSONResponse(status_code=200, content=body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(context: Context) -> Response:
    body = render(DatabaseCollector(context.engine, context.config, context.clock))
    return Response(content=body, media_type="text/plain; version=0.0.4; charset=utf-8")
