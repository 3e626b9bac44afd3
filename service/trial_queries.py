"""Read-only SQL over Optuna's own tables: counts, the best trial, pages of trials.

Optuna's storage API loads every trial of a study to answer anything; the API must answer
in milliseconds for studies of thousands of trials, so it pages in SQL instead. This is the
one module that knows Optuna's schema (through Optuna's own ORM models); Optuna checks the
schema version when the service opens its storage, so a mismatch fails at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models as _optuna_models
from optuna.trial import TrialState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

# Optuna declares its models without type annotations; treat them as such.
om: Any = _optuna_models

OrderBy = Literal["number", "-number", "value", "-value", "duration", "-duration"]


@dataclass
class TrialRow:
    """One trial as read from Optuna's tables (the user attributes carry our bookkeeping)."""

    trial_id: int
    number: int
    state: str
    value: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    intermediate_values: list[tuple[int, float | None]] = field(default_factory=list)
    user_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.datetime_start is None:
            return None
        end = self.datetime_complete or datetime.now(UTC)
        return (end - self.datetime_start).total_seconds()


def _utc(naive: datetime | None) -> datetime | None:
    return None if naive is None else naive.replace(tzinfo=UTC)


def optuna_study_id(session: Session, name: str) -> int | None:
    """Optuna's id of the study called ``name``."""
    return session.scalar(select(om.StudyModel.study_id).where(om.StudyModel.study_name == name))


def state_counts(session: Session, study_id: int) -> dict[str, int]:
    """Number of trials per lower-case Optuna state."""
    rows = session.execute(
        select(om.TrialModel.state, func.count())
        .where(om.TrialModel.study_id == study_id)
        .group_by(om.TrialModel.state)
    ).all()
    return {state.name.lower(): count for state, count in rows}


def best_trial_number(session: Session, study_id: int, direction: str) -> tuple[int, float] | None:
    """Number and value of the best complete trial."""
    value = om.TrialValueModel.value
    row = session.execute(
        select(om.TrialModel.number, value)
        .join(om.TrialValueModel, om.TrialValueModel.trial_id == om.TrialModel.trial_id)
        .where(
            om.TrialModel.study_id == study_id,
            om.TrialModel.state == TrialState.COMPLETE,
            om.TrialValueModel.objective == 0,
            value.is_not(None),
        )
        .order_by(value.desc() if direction == "maximize" else value.asc(), om.TrialModel.number)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except (TypeError, ValueError):
        return value_json


def _fill(session: Session, rows: dict[int, TrialRow], with_intermediate: bool) -> None:
    ids = list(rows)
    if not ids:
        return
    for p in session.scalars(
        select(om.TrialParamModel).where(om.TrialParamModel.trial_id.in_(ids))
    ):
        dist = json_to_distribution(p.distribution_json)
        rows[p.trial_id].params[p.param_name] = dist.to_external_repr(p.param_value)
    for v in session.scalars(
        select(om.TrialValueModel).where(
            om.TrialValueModel.trial_id.in_(ids), om.TrialValueModel.objective == 0
        )
    ):
        rows[v.trial_id].value = om.TrialValueModel.stored_repr_to_value(v.value, v.value_type)
    for a in session.scalars(
        select(om.TrialUserAttributeModel).where(om.TrialUserAttributeModel.trial_id.in_(ids))
    ):
        rows[a.trial_id].user_attrs[a.key] = _decode(a.value_json)
    if with_intermediate:
        for iv in session.scalars(
            select(om.TrialIntermediateValueModel)
            .where(om.TrialIntermediateValueModel.trial_id.in_(ids))
            .order_by(om.TrialIntermediateValueModel.step)
        ):
            value = om.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                iv.intermediate_value, iv.intermediate_value_type
            )
            rows[iv.trial_id].intermediate_values.append((iv.step, value))


def _row(model: om.TrialModel) -> TrialRow:
    return TrialRow(
        trial_id=model.trial_id,
        number=model.number,
        state=model.state.name.lower(),
        value=None,
        datetime_start=_utc(model._datetime_start_utc),
        datetime_complete=_utc(model._datetime_complete_utc),
    )


def list_trials(
    session: Session,
    study_id: int,
    *,
    states: Sequence[str] = (),
    order_by: OrderBy = "number",
    limit: int = 100,
    offset: int = 0,
    with_intermediate: bool = True,
) -> tuple[list[TrialRow], int]:
    """A page of a study's trials and the total matching ``states``."""
    trial = om.TrialModel
    where = [trial.study_id == study_id]
    if states:
        where.append(trial.state.in_([TrialState[s.upper()] for s in states]))
    total = session.scalar(select(func.count()).select_from(trial).where(*where)) or 0

    query = select(trial).where(*where)
    descending = order_by.startswith("-")
    key = order_by.lstrip("-")
    if key == "value":
        value = om.TrialValueModel.value
        query = query.outerjoin(
            om.TrialValueModel,
            (om.TrialValueModel.trial_id == trial.trial_id) & (om.TrialValueModel.objective == 0),
        )
        # Trials without a value go last in either direction.
        query = query.order_by(
            value.is_(None), value.desc() if descending else value.asc(), trial.number
        )
    elif key == "duration":
        # Durations are differences of timestamps, which SQLite stores as text: rank this
        # narrow projection in Python (milliseconds for thousands of trials), then page.
        now = datetime.now(UTC)
        spans = session.execute(
            select(trial.trial_id, trial._datetime_start_utc, trial._datetime_complete_utc).where(
                *where
            )
        ).all()
        known = [
            ((_utc(end) or now) - start_utc, tid)
            for tid, start, end in spans
            if (start_utc := _utc(start)) is not None
        ]
        known.sort(reverse=descending)
        unknown = [tid for tid, start, _ in spans if start is None]
        page_ids = ([tid for _, tid in known] + sorted(unknown))[offset : offset + limit]
        by_id = {
            m.trial_id: m
            for m in session.scalars(select(trial).where(trial.trial_id.in_(page_ids)))
        }
        rows = {tid: _row(by_id[tid]) for tid in page_ids}
        _fill(session, rows, with_intermediate)
        return list(rows.values()), total
    else:
        query = query.order_by(trial.number.desc() if descending else trial.number.asc())
    models = session.scalars(query.limit(limit).offset(offset)).all()
    rows = {m.trial_id: _row(m) for m in models}
    _fill(session, rows, with_intermediate)
    return list(rows.values()), total


def get_trial(session: Session, study_id: int, number: int) -> TrialRow | None:
    """One trial by its number, with everything filled in."""
    model = session.scalar(
        select(om.TrialModel).where(
            om.TrialModel.study_id == study_id, om.TrialModel.number == number
        )
    )
    if model is None:
        return None
    rows = {model.trial_id: _row(model)}
    _fill(session, rows, with_intermediate=True)
    return rows[model.trial_id]
