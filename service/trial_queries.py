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
from functools import lru_cache
from typing import Any, Literal

from optuna.distributions import BaseDistribution, json_to_distribution
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


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> BaseDistribution:
    """Parsed distributions, shared: a study has a handful of distinct ones."""
    return json_to_distribution(distribution_json)


def _fill(session: Session, rows: dict[int, TrialRow], with_intermediate: bool) -> None:
    """Params, values, user attributes and intermediate values of ``rows``, by plain column
    selects (no ORM objects: a page of 100 trials loads thousands of these rows)."""
    ids = list(rows)
    if not ids:
        return
    param = om.TrialParamModel
    for trial_id, name, stored, dist_json in session.execute(
        select(param.trial_id, param.param_name, param.param_value, param.distribution_json).where(
            param.trial_id.in_(ids)
        )
    ):
        rows[trial_id].params[name] = _distribution(dist_json).to_external_repr(stored)
    value = om.TrialValueModel
    for trial_id, stored, value_type in session.execute(
        select(value.trial_id, value.value, value.value_type).where(
            value.trial_id.in_(ids), value.objective == 0
        )
    ):
        rows[trial_id].value = value.stored_repr_to_value(stored, value_type)
    attr = om.TrialUserAttributeModel
    for trial_id, key, value_json in session.execute(
        select(attr.trial_id, attr.key, attr.value_json).where(attr.trial_id.in_(ids))
    ):
        rows[trial_id].user_attrs[key] = _decode(value_json)
    if with_intermediate:
        inter = om.TrialIntermediateValueModel
        for trial_id, step, stored, value_type in session.execute(
            select(
                inter.trial_id, inter.step, inter.intermediate_value, inter.intermediate_value_type
            )
            .where(inter.trial_id.in_(ids))
            .order_by(inter.step)
        ):
            rows[trial_id].intermediate_values.append(
                (step, inter.stored_repr_to_intermediate_value(stored, value_type))
            )


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


def unfinished_trials_of(session: Session, optuna_study_ids: Sequence[int]) -> list[int]:
    """Ids of the trials still RUNNING or WAITING in these Optuna studies."""
    if not optuna_study_ids:
        return []
    return list(
        session.scalars(
            select(om.TrialModel.trial_id).where(
                om.TrialModel.study_id.in_(list(optuna_study_ids)),
                om.TrialModel.state.in_([TrialState.RUNNING, TrialState.WAITING]),
            )
        ).all()
    )


def ledger_rows(session: Session, study_id: int) -> list[tuple[str, bool, bool, int]]:
    """``(state, retried, raised, count)`` of a study's trials, what
    ``service.scheduler.ledger.Counts`` needs to count them by the scheduler's own rules:
    ``retried`` (user attribute) and ``raised`` (an ``error`` and no ``stop_reason``)."""
    trial, attr = om.TrialModel, om.TrialUserAttributeModel

    def has(key: str) -> Any:
        return (
            select(attr.trial_user_attribute_id)
            .where(attr.trial_id == trial.trial_id, attr.key == key)
            .exists()
        )

    retried = has("retried")
    raised = has("error") & ~has("stop_reason")
    rows = session.execute(
        select(trial.state, retried, raised, func.count())
        .where(trial.study_id == study_id)
        .group_by(trial.state, retried, raised)
    ).all()
    return [(state.name.lower(), bool(r), bool(e), n) for state, r, e, n in rows]
