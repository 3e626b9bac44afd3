"""``/api/v1/comparisons``: optimizers tuned side by side, evaluated on fresh seeds, and
the report that says whether one beats the other beyond noise."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from db.models import StudyStatus
from service import quotas
from service.api.deps import Offset, SessionDep, StateDep, UserDep, current_user
from service.api.errors import responses
from service.api.studies import _check_fits_cluster, _check_grid
from service.comparisons import driver, store
from service.comparisons.schemas import ComparisonCreate, ComparisonOut
from service.comparisons.views import comparison_out
from service.errors import Conflict, Forbidden
from service.schemas import ID_MAX, SEED_MAX, Page, StudyStatusName
from service.state import AppState

router = APIRouter(
    prefix="/api/v1/comparisons",
    tags=["comparisons"],
    dependencies=[Depends(current_user)],
    responses=responses(401),
)

ComparisonId = Annotated[int, Path(ge=1, le=ID_MAX, description="the comparison's id")]


def _out(state: AppState, comparison_id: int) -> ComparisonOut:
    with state.sessions() as session:
        return comparison_out(session, state.storage, store.get_comparison(session, comparison_id))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ComparisonOut,
    responses=responses(403, 409, 413, 429),
)
def submit_comparison(request: ComparisonCreate, state: StateDep, user: UserDep) -> ComparisonOut:
    """Queue a comparison: one tuning study per optimizer now (equal budgets, the same
    sampler, pruner and seed), then one evaluation study per optimizer re-training its best
    configuration on ``seeds`` fresh seeds, then the report.

    Its studies are the caller's own and count against their quotas: refused with 429 when
    the optimizers' studies would take the caller past their most studies queued or running,
    403 for a priority above their cap."""
    first = request.tuning_request(request.optimizers[0], seed=0)
    for optimizer in request.optimizers:
        _check_grid(request.tuning_request(optimizer, seed=0), state.settings.max_grid_points)
    with state.sessions() as session:
        quotas.check_submission(
            session, state.settings, user, request.priority, new_studies=len(request.optimizers)
        )
    _check_fits_cluster(first, state.cluster)
    seed = request.seed if request.seed is not None else secrets.randbelow(SEED_MAX - 1)
    comparison_id = store.create_comparison(state.sessions, request, owner=user.name, seed=seed)
    try:
        driver.ensure_studies(state.sessions, state.storage, comparison_id)
    except Conflict as err:
        store.end(state.sessions, comparison_id, StudyStatus.FAILED, "error", error=str(err))
        driver.cancel_parts(state.sessions, comparison_id, by=user.name)
        raise
    return _out(state, comparison_id)


@router.get("", response_model=Page[ComparisonOut])
def list_comparisons(
    state: StateDep,
    session: SessionDep,
    status_: Annotated[list[StudyStatusName] | None, Query(alias="status")] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    workload: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Page[ComparisonOut]:
    """Comparisons, newest first, filtered by status (repeatable), owner and workload;
    ``report`` is left out here (``null``): fetch a comparison by id for it."""
    items, total = store.list_comparisons(
        session, statuses=status_ or [], owner=owner, workload=workload, limit=limit, offset=offset
    )
    return Page(
        items=[comparison_out(session, state.storage, c, with_report=False) for c in items],
        total=total,
    )


@router.get("/{comparison_id}", response_model=ComparisonOut, responses=responses(404))
def get_comparison(comparison_id: ComparisonId, state: StateDep) -> ComparisonOut:
    """One comparison: status, phase, its studies, and the report (provisional while it
    runs: ``report.final`` is false)."""
    return _out(state, comparison_id)


@router.post(
    "/{comparison_id}/cancel", response_model=ComparisonOut, responses=responses(403, 404, 409)
)
def cancel_comparison(comparison_id: ComparisonId, state: StateDep, user: UserDep) -> ComparisonOut:
    """Cancel a queued or running comparison and every study of it still running."""
    with state.sessions() as session:
        comparison = store.get_comparison(session, comparison_id)
        owner, current = comparison.owner, comparison.status
    if owner != user.name and not user.admin:
        raise Forbidden(
            f"comparison {comparison_id} belongs to {owner}; only they or an admin can cancel it"
        )
    if not store.end(
        state.sessions,
        comparison_id,
        StudyStatus.CANCELLED,
        reason="cancelled",
        error=f"cancelled by {user.name}",
    ):
        raise Conflict(
            f"comparison {comparison_id} has already ended ({current}); nothing to cancel"
        )
    for study_id in driver.cancel_parts(state.sessions, comparison_id, by=user.name):
        if state.scheduler is not None:
            state.scheduler.request_stop(study_id)
    return _out(state, comparison_id)
