"""FastAPI dependencies: the app context, a transactional session and the authenticated store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from paywatch.api.context import AppContext
from paywatch.store.db import session_scope
from paywatch.store.models import Store
from paywatch.stores import authenticate, require_key


async def get_context(request: Request) -> AppContext:
    """The app's context (async: a plain attribute read needs no worker thread)."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def admitted(context: Context) -> AsyncIterator[None]:
    """A place among the requests doing database work, awaited on the event loop (see api.db_gate).
    Taken before any thread hop that may check out a connection; released after the session's
    teardown (FastAPI tears dependencies down in reverse order)."""
    async with context.gate.admitted():
        yield


Admitted = Annotated[None, Depends(admitted)]


def get_session(context: Context, _admitted: Admitted) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with session_scope(context.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The store's API key")
_bearer = HTTPBearer(auto_error=False, description="The store's API key as a bearer token")


async def given_key(
    api_key: Annotated[str | None, Security(_api_key)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    """The API key the request sends (``X-Api-Key`` or a bearer token); 401 when it sends none.
    Checked against the stores by :func:`current_store`, or by a handler inside its own transaction."""
    return require_key(api_key or (bearer.credentials if bearer is not None else None))


ApiKey = Annotated[str, Depends(given_key)]


async def request_key(request: Request) -> str:
    """:func:`given_key` called by a handler itself, through the same header schemes (for the
    busiest route, whose dependency solving cost more than its checks)."""
    return await given_key(await _api_key(request), await _bearer(request))


def current_store(session: DbSession, key: ApiKey) -> Store:
    return authenticate(session, key)


CurrentStore = Annotated[Store, Depends(current_store)]
