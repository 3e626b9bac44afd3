"""Per-user limits: how many studies one user may queue, how many of their trials run at
once, and how high they may set a study's priority.

The service's settings give everyone's limits (``ADAMP_TUNE_MAX_*_PER_USER``,
``ADAMP_TUNE_MAX_USER_PRIORITY``); an admin may give one user other limits
(``adamp-tune user limits``), stored on the user. Admins themselves are not limited: they
are who can fix a stuck queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ACTIVE_STATUSES, Study, User, UserRole
from service.auth import Principal
from service.errors import Forbidden, NotFound, TooMany
from service.settings import Settings


@dataclass(frozen=True)
class Limits:
    """One user's effective limits (``None``: unlimited)."""

    active_studies: int | None
    running_trials: int | None
    max_priority: int | None


def limits_of(session: Session, settings: Settings, user: str) -> Limits:
    """The limits that apply to ``user``: their own where an admin set them, else the
    service's."""
    record = session.get(User, user)
    own = (
        (record.max_active_studies, record.max_running_trials, record.max_priority)
        if record is not None
        else (None, None, None)
    )
    return Limits(
        active_studies=own[0] if own[0] is not None else settings.max_active_studies_per_user,
        running_trials=own[1] if own[1] is not None else settings.max_running_trials_per_user,
        max_priority=own[2] if own[2] is not None else settings.max_user_priority,
    )


def running_trial_limits(
    sessions: sessionmaker[Session], settings: Settings
) -> dict[str, int | None]:
    """Trials in flight each user may have (the scheduler's view): a user's own limit, or
    ``None`` (unlimited) for admins without one; key ``""`` holds everyone else's."""
    with sessions() as session:
        users = session.scalars(
            select(User).where(
                (User.max_running_trials.is_not(None)) | (User.role == UserRole.ADMIN.value)
            )
        ).all()
        limits: dict[str, int | None] = {u.name: u.max_running_trials for u in users}
    limits[""] = settings.max_running_trials_per_user
    return limits


def check_submission(
    session: Session, settings: Settings, user: Principal, priority: int, new_studies: int = 1
) -> None:
    """Refuse ``new_studies`` new studies (a comparison queues several at once) over the
    user's queue limit (429) or priority cap (403)."""
    if user.admin:
        return
    limits = limits_of(session, settings, user.name)
    check_priority(limits, user, priority)
    if limits.active_studies is None:
        return
    active = session.scalar(
        select(func.count())
        .select_from(Study)
        .where(Study.owner == user.name, Study.status.in_(ACTIVE_STATUSES))
    )
    if (active or 0) + new_studies > limits.active_studies:
        asked = "" if new_studies == 1 else f" and asks for {new_studies} more at once"
        raise TooMany(
            f"{user.name} has {active} studies queued or running{asked}, the most allowed "
            f"({limits.active_studies}); wait for one to end, cancel one, or ask an admin "
            "to raise your limit (`adamp-tune user limits`)"
        )


def check_priority(limits: Limits, user: Principal, priority: int | None) -> None:
    """Refuse a priority above the user's cap (403); lowering is always allowed."""
    if user.admin or priority is None or limits.max_priority is None:
        return
    if priority > limits.max_priority:
        raise Forbidden(
            f"priority {priority} is above your cap ({limits.max_priority}); an admin sets "
            "caps (`adamp-tune user limits`) and may raise a study's priority"
        )


LIMIT_COLUMNS = ("max_active_studies", "max_running_trials", "max_priority")


def set_limits(
    sessions: sessionmaker[Session], user: str, changes: Mapping[str, int | None]
) -> User:
    """Give ``user`` their own limits: ``changes`` maps columns of ``LIMIT_COLUMNS`` to a
    number, or to ``None`` to return that one to the service's default."""
    unknown = set(changes) - set(LIMIT_COLUMNS)
    if unknown:
        raise ValueError(f"not a limit: {', '.join(sorted(unknown))}")
    with sessions.begin() as session:
        record = session.get(User, user)
        if record is None:
            raise NotFound(f"no user {user!r}; create one with `adamp-tune token create {user}`")
        for column, value in changes.items():
            setattr(record, column, value)
        session.flush()
        session.expunge(record)
        return record
