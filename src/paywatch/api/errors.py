"""Turn every failure into ``{"error": {"code", "message", "field"}}``; bad input is never a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paywatch.api.ratelimit import RateLimitedError
from paywatch.errors import InputError, UnavailableError

log = logging.getLogger("paywatch.api")


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "field": field}})


def _field(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed_json", "request body is not valid JSON")
    field = _field(first.get("loc", ()))
    if field in ("x-api-key", "authorization"):
        return error_response(401, "unauthorized", "invalid credentials header", "X-Api-Key")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "required field is missing"
    elif first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif field == "amount" and first.get("type") == "string_type":
        message = 'must be a decimal string such as "25.5", not a JSON number'
    elif first.get("type") == "model_attributes_type" or (field is None and first.get("type") == "dict_type"):
        message = "request body must be a JSON object"
    return error_response(422, "invalid", f"{field}: {message}" if field else message, field)


async def _input(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return error_response(exc.status_code, exc.code, exc.message, exc.field)


async def _rate_limited(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitedError)
    response = error_response(429, exc.code, exc.message, exc.field)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "unavailable", str(exc))


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 401: "unauthorized"}
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return error_response(400, "malformed_json", "request body is not valid JSON, or is nested too deeply")
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(RateLimitedError, _rate_limited)
    app.add_exception_handler(InputError, _input)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
