"""Reads and writes of the service's own tables, shared by the API and the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack, cast

import optuna
from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import ACTIVE_STATUSES, Study, StudyEvent, StudyStatus, utcnow
from service.errors import Conflict
from service.listing import PageFilters, get_row, list_page
from service.names import name_key
from service.schemas import StudyCreate
from service.study_spec import StudySpec


def rowcount(result: Result[Any]) -> int:
    """Rows an ``UPDATE``/``DELETE`` touched (``execute`` types its result generically)."""
    return cast("CursorResult[Any]", result).rowcount


def add_event(
    session: Session, study_id: int, kind: str, message: str, data: dict[str, Any] | None = None
) -> None:
    """Append to a study's timeline (committed with the caller's transaction)."""
    session.add(StudyEvent(study_id=study_id, kind=kind, message=message, data=data))


def create_study(
    sessions: sessionmaker[Session],
    storage: optuna.storages.BaseStorage,
    request: StudyCreate,
    owner: str,
) -> Study:
    """Record a new queued study and create its Optuna study of the same name.

    The row comes first so that the unique name is claimed atomically; if Optuna already
    has a study of that name (someone used this database directly), the row is removed and
    the caller gets a ``Conflict``.
    """
    assert request.direction is not None  # filled in by StudyCreate's validation
    study = Study(
        name=request.name,
        name_key=name_key(request.name),
        owner=owner,
        workload=request.workload,
        optimizer=request.optimizer,
        direction=request.direction,
        sampler=request.sampler,
        pruner=request.pruner,
        n_trials=request.n_trials,
        max_concurrent=request.max_concurrent,
        timeout_s=request.timeout_s,
        priority=request.priority,
        seed=request.seed,
        gpus_per_trial=request.resources.gpus,
        cpus_per_trial=request.resources.cpus,
        spec=StudySpec.from_request(request).stored(),
        status=StudyStatus.QUEUED.value,
    )
    try:
        with sessions.begin() as session:
            session.add(study)
    except IntegrityError:
        raise _duplicate(sessions, request.name) from None
    try:
        optuna_study = optuna.create_study(
            study_name=request.name, storage=storage, direction=request.direction
        )
    except optuna.exceptions.DuplicatedStudyError:
        with sessions.begin() as session:
            session.execute(delete(Study).where(Study.id == study.id))
        raise Conflict(
            f"an Optuna study named {request.name!r} already exists in this database"
        ) from None
    except BaseException:
        with sessions.begin() as session:
            session.execute(delete(Study).where(Study.id == study.id))
        raise
    with sessions.begin() as session:
        session.execute(
            update(Study).where(Study.id == study.id).values(optuna_study_id=optuna_study._study_id)
        )
        add_event(session, study.id, "submitted", f"submitted by {owner}")
    study.optuna_study_id = optuna_study._study_id
    return study


def _duplicate(sessions: sessionmaker[Session], name: str) -> Conflict:
    """The conflict for a name already taken, naming the study that holds it."""
    with sessions() as session:
        existing = session.scalars(select(Study).where(Study.name_key == name_key(name))).first()
    if existing is None:  # removed meanwhile; the client may simply retry
        return Conflict(f"a study named {name!r} already exists")
    same = "" if existing.name == name else " (names are compared ignoring case and Unicode form)"
    return Conflict(
        f"study {existing.id} is already named {existing.name!r}{same}; choose another name"
    )


def get_study(session: Session, study_id: int) -> Study:
    """The study ``study_id``; ``NotFound`` if there is none."""
    return get_row(session, Study, study_id, "study")


def list_studies(session: Session, **filters: Unpack[PageFilters]) -> tuple[list[Study], int]:
    """A page of studies, newest first, and the total matching the filters."""
    return list_page(session, Study, **filters)


def active_studies(session: Session) -> list[Study]:
    """Queued and running studies in the order the queue serves them."""
    return list(
        session.scalars(
            select(Study)
            .where(Study.status.in_(ACTIVE_STATUSES))
            .order_by(Study.priority.desc(), Study.created_at, Study.id)
        ).all()
    )


def ended_study_ids(session: Session) -> list[tuple[int, str | None]]:
    """Optuna study ids and stop reasons of the studies that have ended."""
    rows = session.execute(
        select(Study.optuna_study_id, Study.stop_reason).where(
            Study.status.not_in(ACTIVE_STATUSES), Study.optuna_study_id.is_not(None)
        )
    ).all()
    return [(sid, reason) for sid, reason in rows if sid is not None]


def cancel_study(sessions: sessionmaker[Session], study_id: int, by: str) -> Study:
    """Mark a queued or running study cancelled; the scheduler then stops its trials.

    Cancelling a study that already ended is a ``Conflict`` (its results stay as they are).
    """
    with sessions.begin() as session:
        study = get_study(session, study_id)
        changed = rowcount(
            session.execute(
                update(Study)
                .where(Study.id == study_id, Study.status.in_(ACTIVE_STATUSES))
                .values(
                    status=StudyStatus.CANCELLED.value,
                    stop_reason="cancelled",
                    finished_at=utcnow(),
                )
            )
        )
        if not changed:
            raise Conflict(
                f"study {study_id} has already ended ({study.status}); nothing to cancel"
            )
        add_event(session, study_id, "cancelled", f"cancelled by {by}")
    with sessions() as session:
        return get_study(session, study_id)


def update_study(
    sessions: sessionmaker[Session], study_id: int, values: dict[str, Any], by: str
) -> None:
    """Change a queued or running study's priority or concurrency; the scheduler follows.

    The stored spec changes with the columns, so both always say the same."""
    with sessions.begin() as session:
        study = get_study(session, study_id)
        spec = StudySpec.from_stored(study.spec).with_changes(**values).stored()
        changed = rowcount(
            session.execute(
                update(Study)
                .where(Study.id == study_id, Study.status.in_(ACTIVE_STATUSES))
                .values(**values, spec=spec)
            )
        )
        if not changed:
            raise Conflict(f"study {study_id} has already ended ({study.status}); it cannot change")
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        add_event(session, study_id, "changed", f"{shown} (by {by})")


def transition(
    sessions: sessionmaker[Session],
    study_id: int,
    status: StudyStatus,
    *,
    event: str,
    message: str,
    from_statuses: Sequence[str] = ACTIVE_STATUSES,
    **values: Any,
) -> bool:
    """Move a study to ``status`` unless it has left ``from_statuses`` meanwhile.

    The condition makes a scheduler's update lose against a concurrent cancel, never
    overwrite it. Returns whether the study changed.
    """
    with sessions.begin() as session:
        changed = rowcount(
            session.execute(
                update(Study)
                .where(Study.id == study_id, Study.status.in_(from_statuses))
                .values(status=status.value, **values)
            )
        )
        if changed:
            add_event(session, study_id, event, message)
    return bool(changed)
