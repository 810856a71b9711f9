"""Liveness and readiness (public) and Prometheus metrics (optionally behind a bearer token).

``/healthz`` says only ``ok``/``degraded`` and each network's state and lag numbers: no error
text (error detail is for ``paywatch status``). ``/metrics`` answers 401 without
``Authorization: Bearer <PAYWATCH_METRICS_TOKEN>`` when that token is set, and is absent here
(404) when ``PAYWATCH_METRICS_BIND`` serves it on an address of its own.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from paywatch.api.context import AppContext
from paywatch.api.db_metrics import DatabaseCollector
from paywatch.api.deps import Admitted, Context
from paywatch.health import network_lags, overall_status
from paywatch.metrics import render
from paywatch.store.db import session_scope

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Overall state and per-network scan lag (no error details)")
def healthz(context: Context, _admitted: Admitted) -> JSONResponse:
    now = context.clock()
    try:
        with session_scope(context.engine) as session:
            session.connection().execute(text("SELECT 1"))
            lags = network_lags(session, context.config, now)
    except Exception:  # the point of a health check is to report, not to raise (and not to explain)
        return JSONResponse(status_code=503, content={"status": "error", "database": "error", "networks": {}})
    limit = context.config.settings.max_lag_seconds
    networks: dict[str, Any] = {}
    for lag in lags:
        networks[lag.network] = {
            "status": lag.state(limit),
            "tip": lag.tip,
            "cursor": lag.cursor,
            "lag_blocks": lag.lag_blocks,
            "lag_seconds": None if lag.lag_seconds is None else round(lag.lag_seconds, 1),
            "seconds_since_scan": None if lag.seconds_since_scan is None else round(lag.seconds_since_scan, 1),
        }
    body = {"status": overall_status(lags, limit), "database": "ok", "networks": networks}
    return JSONResponse(status_code=200, content=body)


def metrics_response(context: AppContext, request: Request) -> Response:
    """The exposition, or 401 when a metrics token is configured and not presented."""
    token = context.config.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return JSONResponse(
                status_code=401,
                content={"error": {"code": "unauthorized", "message": "metrics need a bearer token", "field": None}},
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = render(DatabaseCollector(context.engine, context.config, context.clock))
    return Response(content=body, media_type="text/plain; version=0.0.4; charset=utf-8")


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(context: Context, request: Request, _admitted: Admitted) -> Response:
    return metrics_response(context, request)


def metrics_app(context: AppContext) -> FastAPI:
    """A tiny app serving only ``/metrics`` (for ``PAYWATCH_METRICS_BIND``)."""
    app = FastAPI(title="paywatch metrics", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.context = context
    app.include_router(metrics_router)
    return app
