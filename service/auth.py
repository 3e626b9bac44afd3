"""API tokens: created by the CLI, stored as SHA-256 hashes, checked on every API call.

A token is shown once, when it is created; the database keeps only its hash, so a leaked
database does not leak tokens. Tokens are long random strings, so an unsalted hash is safe.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import ApiToken, User, UserRole, utcnow
from service.errors import Conflict, NotFound, Unauthenticated
from service.repository import rowcount

TOKEN_PREFIX = "at_"
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user name and whether they may act on everyone's studies."""

    name: str
    admin: bool = False
    expires_at: datetime | None = None
    """When the token it came from stops working (``None``: never, or no token)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a duration (``ValueError`` otherwise)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: write a positive whole number and a unit, "
            "s, m, h, d or w (e.g. 30d)"
        )
    seconds = int(number) * units[unit]
    if seconds > 100 * 365 * 86400:
        raise ValueError(f"{text!r} is over 100 years; leave --expires-in out instead")
    return timedelta(seconds=seconds)


def create_token(
    sessions: sessionmaker[Session],
    user: str,
    *,
    admin: bool = False,
    label: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[str, ApiToken]:
    """A new token for ``user`` (created if new; ``admin`` promotes an existing user);
    with ``expires_in`` it is refused from that long after now."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        record = session.get(User, user)
        if record is None:
            record = User(name=user, role=UserRole.ADMIN.value if admin else UserRole.USER.value)
            session.add(record)
        elif admin:
            record.role = UserRole.ADMIN.value
        api_token = ApiToken(
            user_name=user,
            token_hash=hash_token(token),
            prefix=token[:10],
            label=label,
            expires_at=utcnow() + expires_in if expires_in is not None else None,
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


def authenticate(sessions: sessionmaker[Session], token: str) -> Principal:
    """The principal a presented token stands for; ``Unauthenticated`` saying why not
    (unknown, revoked or expired)."""
    digest = hash_token(token)
    with sessions() as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.name == ApiToken.user_name)
            .where(ApiToken.token_hash == digest)
        ).first()
        if row is None:
            raise Unauthenticated("the API token is unknown or revoked")
        api_token, user = row
        now = utcnow()
        if api_token.revoked_at is not None:
            raise Unauthenticated("the API token is unknown or revoked")
        if api_token.expires_at is not None and api_token.expires_at <= now:
            raise Unauthenticated(
                f"the API token expired at {api_token.expires_at:%Y-%m-%d %H:%M} UTC; "
                f"ask for a new one (`adamp-tune token create {user.name} --expires-in 30d`)"
            )
        if api_token.last_used_at is None or now - api_token.last_used_at > _TOUCH_EVERY:
            rowcount(
                session.execute(
                    update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now)
                )
            )
            session.commit()
        return Principal(
            user.name, admin=user.role == UserRole.ADMIN.value, expires_at=api_token.expires_at
        )
