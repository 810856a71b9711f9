"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from paywatch import __version__
from paywatch.api import routes_callbacks, routes_checkout, routes_health, routes_invoices, routes_pay, routes_store
from paywatch.api.context import AppContext, utc_now
from paywatch.api.errors import install_error_handlers
from paywatch.api.limits import BodyLimit
from paywatch.checkout.context import Checkout, default_checkout
from paywatch.config import AppConfig
from paywatch.health import NodeTips, TipReader
from paywatch.ledger import Ledger
from paywatch.store.db import make_engine


def create_app(
    config: AppConfig,
    *,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = utc_now,
    checkout: Checkout | None = None,
    read_tip: TipReader | None = None,
) -> FastAPI:
    """Build the merchant API for ``config``; ``engine``, ``clock``, ``checkout`` and ``read_tip`` are
    injectable for tests."""
    app = FastAPI(
        title="paywatch",
        version=__version__,
        description="Self-hosted crypto payment watcher: invoices, payments and signed status callbacks.",
    )
    app.state.context = AppContext(
        config=config,
        engine=engine or make_engine(config.settings.database_url),
        ledger=Ledger(config.networks),
        clock=clock,
        read_tip=read_tip or NodeTips(config.networks),
    )
    app.state.checkout = checkout or default_checkout(config)
    install_error_handlers(app)
    app.include_router(routes_checkout.router)  # before the invoice routes: it owns the fiat form of POST
    app.include_router(routes_invoices.router)
    app.include_router(routes_health.router)
    if config.settings.metrics_bind is None:
        app.include_router(routes_health.metrics_router)
    app.include_router(routes_callbacks.router)
    app.include_router(routes_store.router)
    app.include_router(routes_pay.router)
    app.add_middleware(BodyLimit, max_bytes=config.settings.max_body_bytes)
    return app
