"""Looking up one row by id and listing a filtered page of rows, for the two kinds of job
the API lists the same way: studies and comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.models import Comparison, Study
from service.errors import NotFound

Job = TypeVar("Job", Study, Comparison)


class PageFilters(TypedDict, total=False):
    """The filters and window of a listing (``list_page``'s keywords), all optional."""

    statuses: Sequence[str]
    owner: str | None
    workload: str | None
    limit: int
    offset: int


def get_row(session: Session, model: type[Job], row_id: int, noun: str) -> Job:
    """The ``model`` row ``row_id``; ``NotFound`` ("no {noun} with id ...") if there is none."""
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"no {noun} with id {row_id}")
    return row


def list_page(
    session: Session,
    model: type[Job],
    *,
    statuses: Sequence[str] = (),
    owner: str | None = None,
    workload: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """A page of ``model`` rows, newest first, and the total matching the filters."""
    where: list[ColumnElement[bool]] = []
    if statuses:
        where.append(model.status.in_(statuses))
    if owner:
        where.append(model.owner == owner)
    if workload:
        where.append(model.workload == workload)
    total = session.scalar(select(func.count()).select_from(model).where(*where)) or 0
    items = session.scalars(
        select(model).where(*where).order_by(model.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(items), total
