"""The authenticated store's own settings: payment policy and callback URL."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from paywatch.api.deps import Context, CurrentStore, DbSession
from paywatch.api.schemas import ERROR_RESPONSES
from paywatch.checkout.logo import LOGO_TYPES, remove_logo, set_logo
from paywatch.checkout.models import StoreLogo
from paywatch.errors import NotFoundError
from paywatch.stores import store_view, update_store

router = APIRouter(prefix="/v1/store", tags=["store"], responses=ERROR_RESPONSES)


class StoreOut(BaseModel):
    """The store's payment policy and callback URL (``late_window`` in seconds)."""

    id: str
    name: str
    underpaid_tolerance: str = Field(examples=["0.005"], description="A fraction of the amount: 0.005 is 0.5 %")
    accept_late_payments: bool
    late_window: int = Field(examples=[86400], description="Seconds after expiry in which payments still match")
    callback_url: str | None


class StorePatch(BaseModel):
    """PATCH /v1/store: only the fields sent are changed; a bad field changes nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)

    underpaid_tolerance: str = Field(
        default="0", max_length=20, examples=["0.5%", "0.005"], description='"0.5%" or the fraction "0.005"'
    )
    accept_late_payments: bool = False
    late_window: int | str = Field(default=0, examples=["24h", 86400], description='Seconds, or "24h", "30m", "7d"')
    callback_url: str | None = Field(default=None, max_length=2048, description="null removes it")

    @field_validator("underpaid_tolerance", "callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("late_window", mode="before")
    @classmethod
    def _seconds_or_duration(cls, value: object) -> object:
        # checked before the union, so that an error names the field rather than a union member
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError('must be seconds or a duration such as "24h", "30m", "7d"')
        return value


@router.get("", response_model=StoreOut, summary="The store's payment policy and callback URL")
def get(store: CurrentStore) -> dict[str, Any]:
    return store_view(store)


@router.patch("", response_model=StoreOut, summary="Change the store's payment policy or callback URL")
def patch(body: StorePatch, store: CurrentStore, session: DbSession, context: Context) -> dict[str, Any]:
    given = {name: getattr(body, name) for name in body.model_fields_set}
    update_store(
        session,
        store,
        context.clock(),
        actor=f"api:{store.id}",
        allow_private_callbacks=context.config.settings.allow_private_callbacks,
        callback_ports=context.config.settings.callback_ports,
        **given,
    )
    return store_view(store)


@router.put(
    "/logo",
    status_code=204,
    summary="Set the logo shown on the store's pay pages",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in LOGO_TYPES},
        }
    },
)
async def put_logo(request: Request, store: CurrentStore, session: DbSession, context: Context) -> Response:
    """The raw image as the body: ``Content-Type: image/png`` or ``image/jpeg``, at most 64 KiB and
    1024 x 1024 pixels. It is served from paywatch's own origin; URLs are not accepted."""
    body = await request.body()
    set_logo(session, store.id, body, request.headers.get("content-type"), context.clock(), actor=f"api:{store.id}")
    return Response(status_code=204)


@router.get("/logo", summary="The store's logo", responses={200: {"content": {t: {} for t in LOGO_TYPES}}})
def get_logo(store: CurrentStore, session: DbSession) -> Response:
    row = session.get(StoreLogo, store.id)
    if row is None:
        raise NotFoundError("the store has no logo", field="logo")
    return Response(row.data, media_type=row.content_type, headers={"X-Content-Type-Options": "nosniff"})


@router.delete("/logo", status_code=204, summary="Remove the store's logo")
def delete_logo(store: CurrentStore, session: DbSession, context: Context) -> Response:
    if not remove_logo(session, store.id, context.clock(), actor=f"api:{store.id}"):
        raise NotFoundError("the store has no logo", field="logo")
    return Response(status_code=204)
