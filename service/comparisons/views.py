"""Building a comparison's API answer from its row, its studies and (while it runs) a
report computed from the trials so far."""

from __future__ import annotations

import optuna
from sqlalchemy.orm import Session

from db.models import ACTIVE_STATUSES, Comparison
from service import trial_queries
from service.api.views import elapsed_seconds, trial_counts
from service.comparisons import report, store
from service.comparisons.schemas import ComparisonOut, ComparisonReport, ComparisonStudyOut
from service.schemas import ResourcesOut, TrialCounts
from workers.registry import all_workloads


def comparison_out(
    session: Session,
    storage: optuna.storages.BaseStorage,
    comparison: Comparison,
    with_report: bool = True,
) -> ComparisonOut:
    """The comparison as the API shows it; ``with_report=False`` leaves the report out
    (lists do, so a page stays small and cheap: fetch one comparison for its report)."""
    spec = comparison.spec
    rows = store.parts(session, comparison.id)
    studies = []
    for link, study in rows:
        counts = TrialCounts()
        best = None
        if study.optuna_study_id is not None:
            counts = trial_counts(session, study.optuna_study_id)
            found = trial_queries.best_trial_number(session, study.optuna_study_id, study.direction)
            best = found[1] if found is not None else None
        studies.append(
            ComparisonStudyOut(
                optimizer=link.optimizer,
                role=link.role,  # type: ignore[arg-type]
                study_id=study.id,
                name=study.name,
                status=study.status,  # type: ignore[arg-type]
                counts=counts,
                best_value=best,
            )
        )
    found_report = comparison.report if with_report else None
    if found_report is None and with_report and rows and comparison.status in ACTIVE_STATUSES:
        found_report = report.build(storage, comparison, rows, final=False)
    workload = all_workloads().get(comparison.workload)
    resources = spec.get("resources") or {}
    return ComparisonOut(
        id=comparison.id,
        name=comparison.name,
        owner=comparison.owner,
        workload=comparison.workload,
        metric=workload.metric if workload is not None else None,
        optimizers=list(spec["optimizers"]),
        status=comparison.status,  # type: ignore[arg-type]
        phase=comparison.phase,  # type: ignore[arg-type]
        stop_reason=comparison.stop_reason,
        error=comparison.error,
        n_trials=spec["n_trials"],
        seeds=spec["seeds"],
        seed=spec["seed"],
        sampler=spec["sampler"],
        pruner=spec["pruner"],
        direction=spec.get("direction") or "maximize",
        max_concurrent=spec["max_concurrent"],
        priority=spec["priority"],
        resources=ResourcesOut(gpus=resources.get("gpus", 0.0), cpus=resources.get("cpus", 1.0)),
        fixed=spec.get("fixed") or {},
        studies=studies,
        report=ComparisonReport.model_validate(found_report) if found_report else None,
        created_at=comparison.created_at,
        started_at=comparison.started_at,
        finished_at=comparison.finished_at,
        elapsed_s=elapsed_seconds(comparison.started_at, comparison.finished_at),
    )
