"""The authenticated store's own settings: payment policy and callback URL."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from paywatch.api.deps import Context, CurrentStore, DbSession
from paywatch.api.schemas import ERROR_RESPONSES
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
