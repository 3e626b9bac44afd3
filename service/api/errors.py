"""Exception handlers: domain errors and bad input become 4xx answers a user can act on."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from service.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceError,
    TooMany,
    Unauthenticated,
)
from service.schemas import ErrorOut

log = logging.getLogger(__name__)

_MEANING = {
    401: "no valid token (missing, unknown, revoked or expired) where auth is on",
    403: "someone else's study, a priority above the caller's cap, or a write from another "
    "site or without the CSRF header",
    404: "no such study, trial or comparison",
    409: "a study or comparison of that name exists (ignoring case and Unicode form), or it "
    "has ended",
    413: "the request body is over the limit (ADAMP_TUNE_MAX_BODY_BYTES)",
    429: "a per-user limit is reached (studies queued or running at once, or requests a "
    "second: then `Retry-After` says when to retry), or the service-wide budget of heavy "
    "reads is spent",
    503: "the database (or, for a checkpoint, the checkpoint store) is unavailable",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives, in the service's error shape."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}


_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unauthenticated: 401,
    InvalidRequest: 422,
    TooMany: 429,
}


MAX_ERRORS = 5
"""Validation errors listed per answer; the rest are counted, not listed."""


def excerpt(text: str, limit: int = 300) -> str:
    """At most ``limit`` characters of ``text``: an answer never echoes a client's input whole."""
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({len(text)} characters)"


def _loc_part(part: Any) -> str | int:
    return part if isinstance(part, int) else excerpt(str(part), 64)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def _summary(errors: list[dict[str, Any]], more: int) -> str:
    text = "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)
    return f"{text}; and {more} more" if more else text


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    every = exc.errors()
    errors = [
        {
            "loc": [_loc_part(p) for p in e.get("loc", ())],
            "msg": excerpt(str(e.get("msg", ""))),
            "type": e.get("type", ""),
        }
        for e in every[:MAX_ERRORS]
    ]
    more = max(0, len(every) - MAX_ERRORS)
    return JSONResponse(
        status_code=422, content={"detail": errors, "message": _summary(errors, more)}
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette lists only the first route's)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path 404, 405, 413) in the service's error shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        # FastAPI's answer to a body that is not even text (bytes that are not UTF-8).
        errors = [{"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}]
        return JSONResponse(
            status_code=422, content={"detail": errors, "message": "body: not UTF-8 JSON"}
        )
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    message = excerpt(str(exc.detail))
    return JSONResponse(
        status_code=exc.status_code,
        content={"detail": message, "message": message},
        headers=headers,
    )


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 400)
    if isinstance(exc, InvalidRequest):
        detail: Any = [{"loc": list(exc.loc), "msg": excerpt(str(exc)), "type": "value_error"}]
        message = f"{_where(exc.loc)}: {excerpt(str(exc))}"
    else:
        detail = message = excerpt(str(exc))
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(
        status_code=code, content={"detail": detail, "message": message}, headers=headers
    )


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        status_code=503,
        content={
            "detail": "the database is unavailable",
            "message": "the database is unavailable; retry in a few seconds",
        },
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(OperationalError, _database_down)
