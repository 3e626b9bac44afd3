"""Dependencies shared by the routers: the app state, a database session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import Principal, authenticate
from service.errors import Unauthenticated
from service.state import AppState

_bearer = HTTPBearer(auto_error=False, description="a token from `adamp-tune token create`")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.adamp
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_user(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the Bearer token.

    With authentication off, a call without a token acts as the configured default owner
    (who may act on every study); a token, when given, is still checked and used.
    """
    if credentials is None:
        if state.settings.auth_required:
            raise Unauthenticated(
                "this service needs an API token: send `Authorization: Bearer <token>` "
                "(create one with `adamp-tune token create YOUR_NAME`)"
            )
        return Principal(state.settings.default_owner, admin=True)
    principal = authenticate(state.sessions, credentials.credentials)
    if principal is None:
        raise Unauthenticated("the API token is unknown or revoked")
    return principal


UserDep = Annotated[Principal, Depends(current_user)]
