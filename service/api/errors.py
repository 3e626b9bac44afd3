"""Exception handlers: domain errors and bad input become 4xx answers a user can act on."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from service.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unauthenticated,
)

log = logging.getLogger(__name__)

_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unauthenticated: 401,
    InvalidRequest: 422,
}


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def _summary(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors, "message": _summary(errors)})


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 400)
    if isinstance(exc, InvalidRequest):
        detail: Any = [{"loc": list(exc.loc), "msg": str(exc), "type": "value_error"}]
        message = f"{_where(exc.loc)}: {exc}"
    else:
        detail = message = str(exc)
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
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(OperationalError, _database_down)
