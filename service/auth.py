"""API tokens: created by the CLI, stored as SHA-256 hashes, checked on every API call.

A token is shown once, when it is created; the database keeps only its hash, so a leaked
database does not leak tokens. Tokens are long random strings, so an unsalted hash is safe.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import ApiToken, User, UserRole, utcnow
from service.errors import Conflict, NotFound
from service.repository import rowcount

TOKEN_PREFIX = "at_"
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user name and whether they may act on everyone's studies."""

    name: str
    admin: bool = False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    sessions: sessionmaker[Session], user: str, *, admin: bool = False, label: str | None = None
) -> tuple[str, ApiToken]:
    """A new token for ``user`` (created if new; ``admin`` promotes an existing user)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        record = session.get(User, user)
        if record is None:
            record = User(name=user, role=UserRole.ADMIN.value if admin else UserRole.USER.value)
            session.add(record)
        elif admin:
            record.role = UserRole.ADMIN.value
        api_token = ApiToken(
            user_name=user, token_hash=hash_token(token), prefix=token[:10], label=label
        )
        session.add(api_token)
    return token, api_token


def list_tokens(session: Session) -> list[tuple[ApiToken, User]]:
    """Every token with its user, oldest first."""
    rows = session.execute(
        select(ApiToken, User).join(User, User.name == ApiToken.user_name).order_by(ApiToken.id)
    ).all()
    return [(t, u) for t, u in rows]


def revoke_token(sessions: sessionmaker[Session], which: str) -> ApiToken:
    """Revoke the token with id ``which`` or whose shown prefix is ``which``."""
    with sessions.begin() as session:
        query = select(ApiToken)
        query = (
            query.where(ApiToken.id == int(which))
            if which.isdigit()
            else query.where(ApiToken.prefix == which)
        )
        matches = session.scalars(query).all()
        if not matches:
            raise NotFound(f"no token {which!r}; see `adamp-tune token list`")
        if len(matches) > 1:
            raise Conflict(f"{which!r} matches {len(matches)} tokens; give the token's id")
        token = matches[0]
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return token


def authenticate(sessions: sessionmaker[Session], token: str) -> Principal | None:
    """The principal a presented token stands for, or ``None`` if it is unknown or revoked."""
    digest = hash_token(token)
    with sessions() as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.name == ApiToken.user_name)
            .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
        ).first()
        if row is None:
            return None
        api_token, user = row
        now = utcnow()
        if api_token.last_used_at is None or now - api_token.last_used_at > _TOUCH_EVERY:
            rowcount(
                session.execute(
                    update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now)
                )
            )
            session.commit()
        return Principal(user.name, admin=user.role == UserRole.ADMIN.value)
