"""Dependencies shared by the routers: the app state, a database session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import Principal
from service.errors import Unauthenticated
from service.gate import PRINCIPAL_KEY
from service.schemas import ID_MAX, OFFSET_MAX
from service.state import AppState

StudyId = Annotated[int, Path(ge=1, le=ID_MAX, description="the study's id")]
"""A study id from the path: range-checked, so no number reaches the database unchecked."""
TrialNumber = Annotated[int, Path(ge=0, le=ID_MAX, description="the trial's number")]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX, description="items to skip")]

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
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, as ``service.gate.AuthGate`` established it before the route ran.

    The gate has already refused whoever may not pass (``401``); with authentication off,
    a call without a token acts as the configured default owner. ``credentials`` is here
    for the OpenAPI schema, which so documents the Bearer scheme on every route.
    """
    principal = request.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise Unauthenticated(
            "this service needs an API token: send `Authorization: Bearer <token>` "
            "(create one with `adamp-tune token create YOUR_NAME`)"
        )
    return principal


UserDep = Annotated[Principal, Depends(current_user)]
