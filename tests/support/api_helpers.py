"""Build the real API app on a test database, with a controllable clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from paywatch.api.app import create_app
from paywatch.config import AppConfig
from paywatch.store.db import session_scope
from paywatch.stores import create_store
from tests.conftest import T0


@dataclass
class Clock:
    """A settable clock injected into the app."""

    now: datetime = T0
    log: list[datetime] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    clock: Clock
    key: str
    store_id: str
    engine: Engine

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-Key": key or self.key}


def make_api(engine: Engine, config: AppConfig, name: str = "shop") -> Api:
    clock = Clock()
    with session_scope(engine) as session:
        created = create_store(session, name, clock())
    app = create_app(config, engine=engine, clock=clock)
    return Api(app, TestClient(app, raise_server_exceptions=False), clock, created.api_key, created.store.id, engine)


def add_store(api: Api, name: str) -> str:
    with session_scope(api.engine) as session:
        return create_store(session, name, api.clock()).api_key
