"""``/api/v1/studies/{id}/trials``: pages of trials and single trials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from service import repository, trial_queries
from service.api.deps import Offset, SessionDep, StateDep, StudyId, TrialNumber, current_user
from service.api.errors import responses
from service.api.views import trial_out
from service.errors import NotFound
from service.frozen import is_frozen, json_response
from service.schemas import Page, TrialCounts, TrialOut, TrialStateName

HEAVY_PAGE = 200
"""Trials per page above which a running study's page is cached (see ``list_trials``)."""

router = APIRouter(
    prefix="/api/v1/studies/{study_id}/trials",
    tags=["trials"],
    dependencies=[Depends(current_user)],
    responses=responses(401, 404),
)


@router.get("", response_model=Page[TrialOut])
def list_trials(
    study_id: StudyId,
    session: SessionDep,
    app_state: StateDep,
    state: Annotated[list[TrialStateName] | None, Query()] = None,
    order_by: trial_queries.OrderBy = "number",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
    intermediate: bool = True,
) -> Response:
    """Trials of a study, filtered by state (repeatable), ordered, paged.

    Pages of more than ``HEAVY_PAGE`` trials of a running study cost the service real CPU
    time (about a second for 1,000 on a small machine): identical ones asked again are
    served from the last answer for at most ``max(0.5 s, 5 x its cost)``, so many readers
    cannot crowd out the scheduler; the ``X-Stale-Age`` header then says how old it is."""
    states = tuple(sorted(set(state or [])))
    key = ("trials", study_id, states, order_by, limit, offset, intermediate)
    if (kept := app_state.frozen_answers.get(key)) is not None:
        return kept
    study = repository.get_study(session, study_id)
    if study.optuna_study_id is None:
        return json_response(Page[TrialOut](items=[], total=0).model_dump_json().encode())
    optuna_id = study.optuna_study_id
    counts = TrialCounts(**trial_queries.state_counts(session, optuna_id))

    def page() -> bytes:
        rows, total = trial_queries.list_trials(
            session,
            optuna_id,
            states=states,
            order_by=order_by,
            limit=limit,
            offset=offset,
            with_intermediate=intermediate,
        )
        return Page(items=[trial_out(r) for r in rows], total=total).model_dump_json().encode()

    if is_frozen(study.status, counts):
        body = page()
        app_state.frozen_answers.keep(key, body)
        return json_response(body)
    if limit <= HEAVY_PAGE:
        return json_response(page())
    # A running trial's values change without the counts changing: a page is only ever
    # reused for its age window, never taken as current.
    body, stale, age = app_state.page_cache.fetch(key, object(), running=True, compute=page)
    answer = json_response(body)
    if stale:
        answer.headers["X-Stale-Age"] = f"{age:.1f}"
    return answer


@router.get("/{number}", response_model=TrialOut)
def get_trial(study_id: StudyId, number: TrialNumber, session: SessionDep) -> TrialOut:
    """One trial: params, value, intermediate values, state, placement, attempts."""
    study = repository.get_study(session, study_id)
    row = (
        trial_queries.get_trial(session, study.optuna_study_id, number)
        if study.optuna_study_id is not None
        else None
    )
    if row is None:
        raise NotFound(f"study {study_id} has no trial {number}")
    return trial_out(row)
