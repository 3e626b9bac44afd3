"""``/api/v1/studies``: submit, list, inspect, cancel studies; parameter importances."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from db.models import ACTIVE_STATUSES
from service import quotas, repository, trial_queries
from service.api.deps import (
    Offset,
    SessionDep,
    StateDep,
    StudyId,
    UserDep,
    current_user,
)
from service.api.errors import responses
from service.api.views import study_out
from service.auth import Principal
from service.cluster import Cluster
from service.errors import Forbidden, InvalidRequest
from service.frozen import is_frozen, json_response
from service.importance import importances_at
from service.schemas import (
    ImportanceOut,
    Page,
    StudyCreate,
    StudyOut,
    StudyStatusName,
    StudyUpdate,
)
from service.state import AppState

router = APIRouter(
    prefix="/api/v1/studies",
    tags=["studies"],
    dependencies=[Depends(current_user)],
    responses=responses(401),
)


def _check_fits_cluster(request: StudyCreate, cluster: Cluster) -> None:
    """Reject a per-trial request that no live node could ever satisfy."""
    nodes = cluster.nodes()
    if not nodes:
        return  # no view of the cluster: the scheduler waits for room instead
    need = request.resources
    if any(n.cpus >= need.cpus and n.gpus >= need.gpus for n in nodes):
        return
    most_gpus = max(n.gpus for n in nodes)
    most_cpus = max(n.cpus for n in nodes)
    field = "gpus" if need.gpus > most_gpus else "cpus"
    raise InvalidRequest(
        ("body", "resources", field),
        f"no node of the cluster can run a trial needing {need.gpus:g} GPUs and "
        f"{need.cpus:g} CPUs (largest node: {most_gpus:g} GPUs, {most_cpus:g} CPUs); "
        "lower `resources` or add a node",
    )


def _check_grid(request: StudyCreate, limit: int) -> None:
    """Refuse a grid larger than the service's limit, naming its largest knob."""
    size = request.grid_size
    if size is None or size <= limit:
        return
    counts = {k: d.grid_count or 0 for k, d in request.search_space.items()}
    largest = max(counts, key=lambda k: counts[k])
    shape = " x ".join(f"{k} {n:,}" for k, n in counts.items())
    raise InvalidRequest(
        ("body", "search_space", largest),
        f"the grid has {size:,} points ({shape}); at most {limit:,} "
        "(ADAMP_TUNE_MAX_GRID_POINTS): fewer choices or a larger step",
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses=responses(403, 409, 413, 429),
)
def submit_study(request: StudyCreate, state: StateDep, user: UserDep) -> StudyOut:
    """Queue a new study; the scheduler starts its trials as the cluster has room.

    Refused with 429 when the caller already has their most studies queued or running,
    403 for a priority above their cap (admins are not limited)."""
    _check_grid(request, state.settings.max_grid_points)
    with state.sessions() as session:
        quotas.check_submission(session, state.settings, user, request.priority)
    _check_fits_cluster(request, state.cluster)
    study = repository.create_study(state.sessions, state.storage, request, owner=user.name)
    with state.sessions() as session:
        return study_out(session, repository.get_study(session, study.id))


@router.get("", response_model=Page[StudyOut])
def list_studies(
    session: SessionDep,
    status_: Annotated[list[StudyStatusName] | None, Query(alias="status")] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    workload: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Page[StudyOut]:
    """Studies, newest first, filtered by status (repeatable), owner and workload."""
    items, total = repository.list_studies(
        session, statuses=status_ or [], owner=owner, workload=workload, limit=limit, offset=offset
    )
    return Page(items=[study_out(session, s) for s in items], total=total)


@router.get("/{study_id}", response_model=StudyOut, responses=responses(404))
def get_study(study_id: StudyId, session: SessionDep, state: StateDep) -> Response:
    """One study: status, trial counts per state, best trial, timings."""
    key = ("study", study_id)
    if (kept := state.frozen_answers.get(key)) is not None:
        return kept
    out = study_out(session, repository.get_study(session, study_id))
    body = out.model_dump_json().encode()
    if is_frozen(out.status, out.counts):
        state.frozen_answers.keep(key, body)
    return json_response(body)


def _check_owner(state: AppState, study_id: int, user: Principal, action: str) -> None:
    with state.sessions() as session:
        study = repository.get_study(session, study_id)
    if study.owner != user.name and not user.admin:
        raise Forbidden(
            f"study {study_id} belongs to {study.owner}; only they or an admin can {action} it"
        )


@router.patch("/{study_id}", response_model=StudyOut, responses=responses(403, 404, 409, 413))
def change_study(
    study_id: StudyId, change: StudyUpdate, state: StateDep, user: UserDep
) -> StudyOut:
    """Change a queued or running study's ``priority`` (up to the caller's cap; admins may
    set any) or ``max_concurrent``."""
    _check_owner(state, study_id, user, "change")
    with state.sessions() as session:
        limits = quotas.limits_of(session, state.settings, user.name)
    quotas.check_priority(limits, user, change.priority)
    repository.update_study(
        state.sessions, study_id, change.model_dump(exclude_none=True), by=user.name
    )
    with state.sessions() as session:
        return study_out(session, repository.get_study(session, study_id))


@router.post("/{study_id}/cancel", response_model=StudyOut, responses=responses(403, 404, 409, 413))
def cancel_study(study_id: StudyId, state: StateDep, user: UserDep) -> StudyOut:
    """Cancel a queued or running study; its running trials are stopped within seconds."""
    _check_owner(state, study_id, user, "cancel")
    repository.cancel_study(state.sessions, study_id, by=user.name)
    if state.scheduler is not None:
        state.scheduler.request_stop(study_id)  # at once, not at the loop's next sync
    with state.sessions() as session:
        return study_out(session, repository.get_study(session, study_id))


@router.get("/{study_id}/events", responses=responses(404))
def study_events(study_id: StudyId, session: SessionDep) -> list[dict[str, Any]]:
    """The study's timeline: submitted, started, trials re-run, ended."""
    study = repository.get_study(session, study_id)
    return [
        {"at": e.at, "kind": e.kind, "message": e.message, "data": e.data}
        for e in sorted(study.events, key=lambda e: e.id)
    ]


@router.get("/{study_id}/importance", response_model=ImportanceOut, responses=responses(404))
def importance(study_id: StudyId, state: StateDep, session: SessionDep) -> ImportanceOut:
    """Parameter importances (Optuna's fANOVA) over the latest complete trials (at most
    1,000). A running study's are recomputed no more often than their cost allows: until
    then the last answer comes back with ``stale`` and its age."""
    record = repository.get_study(session, study_id)
    searched = list(record.spec.get("search_space", {}))
    counts = (
        trial_queries.state_counts(session, record.optuna_study_id)
        if record.optuna_study_id is not None
        else {}
    )
    answer = state.importance_cache.get(
        key=("importance", study_id),
        counts=counts.get("complete", 0),
        running=record.status in ACTIVE_STATUSES,
        compute=lambda: state.offload.run(
            importances_at, state.settings.resolved_database_url, record.name, searched
        ),
    )
    return ImportanceOut(study_id=study_id, **answer)
