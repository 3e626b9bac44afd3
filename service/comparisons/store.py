"""Reads and writes of the comparison tables, shared by the API and the driver."""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    ACTIVE_STATUSES,
    Comparison,
    ComparisonStudy,
    Study,
    StudyStatus,
    utcnow,
)
from service.comparisons.schemas import ComparisonCreate, evaluation_name, tuning_name
from service.errors import Conflict
from service.listing import PageFilters, get_row, list_page
from service.names import name_key
from service.repository import rowcount


def create_comparison(
    sessions: sessionmaker[Session], request: ComparisonCreate, owner: str, seed: int
) -> int:
    """Record a queued comparison; ``Conflict`` when its name or a study name it needs is
    taken. Its studies are created by ``driver.advance``."""
    names = [
        n
        for o in request.optimizers
        for n in (tuning_name(request.name, o), evaluation_name(request.name, o))
    ]
    with sessions() as session:
        taken = session.scalars(
            select(Study.name).where(Study.name_key.in_([name_key(n) for n in names]))
        ).first()
    if taken is not None:
        raise Conflict(
            f"a study named {taken!r} exists, and comparison {request.name!r} needs that name "
            "for one of its studies; choose another name"
        )
    spec = request.model_dump(mode="json")
    spec["seed"] = seed
    comparison = Comparison(
        name=request.name,
        name_key=name_key(request.name),
        owner=owner,
        workload=request.workload,
        spec=spec,
        status=StudyStatus.QUEUED.value,
        phase="tuning",
    )
    try:
        with sessions.begin() as session:
            session.add(comparison)
            session.flush()
            return comparison.id
    except IntegrityError:
        raise Conflict(f"a comparison named {request.name!r} already exists") from None


def get_comparison(session: Session, comparison_id: int) -> Comparison:
    """The comparison ``comparison_id``; ``NotFound`` if there is none."""
    return get_row(session, Comparison, comparison_id, "comparison")


def list_comparisons(
    session: Session, **filters: Unpack[PageFilters]
) -> tuple[list[Comparison], int]:
    """A page of comparisons, newest first, and the total matching the filters."""
    return list_page(session, Comparison, **filters)


def active_comparison_ids(session: Session) -> list[int]:
    """Queued and running comparisons, oldest first (the driver's work list)."""
    return list(
        session.scalars(
            select(Comparison.id)
            .where(Comparison.status.in_(ACTIVE_STATUSES))
            .order_by(Comparison.id)
        ).all()
    )


def parts(session: Session, comparison_id: int) -> list[tuple[ComparisonStudy, Study]]:
    """The comparison's studies with their links, tuning before evaluation."""
    rows = session.execute(
        select(ComparisonStudy, Study)
        .join(Study, Study.id == ComparisonStudy.study_id)
        .where(ComparisonStudy.comparison_id == comparison_id)
        .order_by(ComparisonStudy.role.desc(), Study.id)
    ).all()
    return [(link, study) for link, study in rows]


def link(
    sessions: sessionmaker[Session], comparison_id: int, optimizer: str, role: str, study_id: int
) -> bool:
    """Record that ``study_id`` is ``optimizer``'s ``role`` study of the comparison; False
    when that link exists already (the API and the driver may both get here first)."""
    try:
        with sessions.begin() as session:
            session.add(
                ComparisonStudy(
                    comparison_id=comparison_id, optimizer=optimizer, role=role, study_id=study_id
                )
            )
    except IntegrityError:
        with sessions() as session:
            found = session.get(ComparisonStudy, (comparison_id, optimizer, role))
        if found is None or found.study_id != study_id:
            raise
        return False
    return True


def transition(
    sessions: sessionmaker[Session],
    comparison_id: int,
    status: StudyStatus,
    **values: Any,
) -> bool:
    """Move an active comparison to ``status``; a concurrent cancel wins (returns False)."""
    with sessions.begin() as session:
        return bool(
            rowcount(
                session.execute(
                    update(Comparison)
                    .where(Comparison.id == comparison_id, Comparison.status.in_(ACTIVE_STATUSES))
                    .values(status=status.value, **values)
                )
            )
        )


def set_values(sessions: sessionmaker[Session], comparison_id: int, **values: Any) -> None:
    """Change an active comparison's columns (phase, report, started_at)."""
    with sessions.begin() as session:
        session.execute(
            update(Comparison)
            .where(Comparison.id == comparison_id, Comparison.status.in_(ACTIVE_STATUSES))
            .values(**values)
        )


def end(
    sessions: sessionmaker[Session],
    comparison_id: int,
    status: StudyStatus,
    reason: str,
    error: str | None = None,
    report: dict[str, Any] | None = None,
) -> bool:
    """End an active comparison; returns whether it was still active."""
    values: dict[str, Any] = {"stop_reason": reason, "error": error, "finished_at": utcnow()}
    if report is not None:
        values.update(report=report, phase="done")
    return transition(sessions, comparison_id, status, **values)
