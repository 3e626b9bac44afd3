"""Building API responses from ORM rows and Optuna's tables."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from db.models import Study, utcnow
from service import trial_queries
from service.scheduler.attrs import (
    ATTR_ATTEMPT,
    ATTR_DURATION,
    ATTR_ERROR,
    ATTR_PLACEMENT,
    ATTR_RETRY_OF,
    ATTR_SIF,
    ATTR_STOP_REASON,
)
from service.scheduler.ledger import counts_of
from service.schemas import (
    BestTrial,
    IntermediateValue,
    NodeOut,
    ResourcesOut,
    StudyOut,
    TrialCounts,
    TrialOut,
)
from workers.registry import all_workloads


def elapsed_seconds(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` (or now), for the API's timings."""
    if start is None:
        return None
    seconds = ((end or utcnow()) - start).total_seconds()
    return seconds if math.isfinite(seconds) else None


def trial_counts(session: Session, optuna_study_id: int) -> TrialCounts:
    """Trials per state and the ledger's counts (``service.scheduler.ledger``)."""
    ledger = counts_of(trial_queries.ledger_rows(session, optuna_study_id))
    return TrialCounts(
        **trial_queries.state_counts(session, optuna_study_id),
        finished=ledger.finished,
        retried=ledger.retried,
    )


def study_out(session: Session, study: Study) -> StudyOut:
    """A study with its trial counts and best trial, read from Optuna's tables."""
    counts = TrialCounts()
    best = None
    if study.optuna_study_id is not None:
        counts = trial_counts(session, study.optuna_study_id)
        found = trial_queries.best_trial_number(session, study.optuna_study_id, study.direction)
        if found is not None:
            row = trial_queries.get_trial(session, study.optuna_study_id, found[0])
            if row is not None and row.value is not None:
                best = BestTrial(number=row.number, value=row.value, params=row.params)
    workload = all_workloads().get(study.workload)
    spec: dict[str, Any] = study.spec
    return StudyOut(
        id=study.id,
        name=study.name,
        owner=study.owner,
        workload=study.workload,
        metric=workload.metric if workload else None,
        optimizer=study.optimizer,
        direction=study.direction,
        sampler=study.sampler,
        pruner=study.pruner,
        status=study.status,  # type: ignore[arg-type]
        stop_reason=study.stop_reason,
        error=study.error,
        n_trials=study.n_trials,
        max_concurrent=study.max_concurrent,
        timeout_s=study.timeout_s,
        priority=study.priority,
        seed=study.seed,
        resources=ResourcesOut(gpus=study.gpus_per_trial, cpus=study.cpus_per_trial),
        search_space=spec.get("search_space", {}),
        fixed=spec.get("fixed", {}),
        counts=counts,
        best_trial=best,
        created_at=study.created_at,
        started_at=study.started_at,
        finished_at=study.finished_at,
        elapsed_s=elapsed_seconds(study.started_at, study.finished_at),
        optuna_study_name=study.name,
    )


def trial_out(row: trial_queries.TrialRow) -> TrialOut:
    """A trial with its placement and bookkeeping unpacked from user attributes."""
    attrs = row.user_attrs
    placement: dict[str, Any] = attrs.get(ATTR_PLACEMENT) or {}
    duration = attrs.get(ATTR_DURATION)
    return TrialOut(
        number=row.number,
        state=row.state,  # type: ignore[arg-type]
        value=row.value,
        params=row.params,
        intermediate_values=[
            IntermediateValue(step=s, value=v) for s, v in row.intermediate_values
        ],
        datetime_start=row.datetime_start,
        datetime_complete=row.datetime_complete,
        duration_s=float(duration) if duration is not None else row.duration_s,
        node=NodeOut(
            node_id=placement.get("node_id"),
            node_ip=placement.get("node_ip"),
            hostname=placement.get("hostname"),
            pid=placement.get("pid"),
        )
        if placement
        else None,
        gpu_ids=[str(g) for g in placement.get("gpu_ids", [])],
        cuda_visible_devices=placement.get("cuda_visible_devices"),
        device=placement.get("device"),
        attempts=int(attrs.get(ATTR_ATTEMPT, 1)),
        retry_of=attrs.get(ATTR_RETRY_OF),
        scale_invariant_fraction=attrs.get(ATTR_SIF),
        stop_reason=attrs.get(ATTR_STOP_REASON),
        error=attrs.get(ATTR_ERROR),
    )
