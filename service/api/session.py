"""``/auth/session``: a browser trades its API token for a session cookie, and back.

Browsers cannot add an ``Authorization`` header to the requests of optuna-dashboard's
pages, so signing in sets the token as an HttpOnly, ``SameSite=Strict`` cookie (no script
can read it, no other site can send it) and a readable CSRF cookie that the dashboard's
script echoes in ``X-CSRF-Token`` on the requests that change something
(``service.gate`` checks both). Every request re-checks the token, so revoking or expiring
it ends the session at once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio.to_thread
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from service.api.deps import StateDep
from service.auth import authenticate
from service.gate import CSRF_COOKIE, SESSION_COOKIE, csrf_value
from service.schemas import ErrorOut

router = APIRouter(prefix="/auth", tags=["auth"])


class SignIn(BaseModel):
    """The token to sign in with, as ``adamp-tune token create`` printed it."""

    token: str = Field(min_length=1, max_length=512)


class SessionOut(BaseModel):
    user: str
    admin: bool
    expires_in_s: int = Field(description="seconds until the session cookie lapses")


@router.post(
    "/session",
    response_model=SessionOut,
    responses={401: {"model": ErrorOut, "description": "the token is unknown, revoked or expired"}},
)
async def sign_in(
    body: SignIn, request: Request, response: Response, state: StateDep
) -> SessionOut:
    """Sign a browser in: the answer sets the session and CSRF cookies."""
    principal = await anyio.to_thread.run_sync(authenticate, state.sessions, body.token)
    max_age = state.settings.session_cookie_max_age_s
    if principal.expires_at is not None:
        left = (principal.expires_at - datetime.now(UTC)).total_seconds()
        max_age = max(1, min(max_age, int(left)))
    secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE,
        body.token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_value(body.token),
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(user=principal.name, admin=principal.admin, expires_in_s=max_age)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def sign_out(response: Response) -> Response:
    """Sign a browser out: both cookies are cleared."""
    response.status_code = status.HTTP_204_NO_CONTENT
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")
    return response
