"""FastAPI dependencies: the app context, a transactional session and the authenticated store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session

from paywatch.api.context import AppContext
from paywatch.store.db import session_scope
from paywatch.store.models import Store
from paywatch.stores import authenticate


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


def get_session(context: Context) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with session_scope(context.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


def current_store(
    session: DbSession,
    x_api_key: Annotated[str | None, Header(description="The store's API key")] = None,
    authorization: Annotated[str | None, Header(description="`Bearer <API key>` instead of X-Api-Key")] = None,
) -> Store:
    key = x_api_key
    if key is None and authorization is not None:
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    return authenticate(session, key)


CurrentStore = Annotated[Store, Depends(current_store)]
