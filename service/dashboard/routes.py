"""The dashboard's HTML pages and the JSON only it needs (plots, the best configuration).

With auth on, a page is served only to a signed-in browser (``service.gate`` answers the
sign-in page otherwise); everything about studies comes from the JSON API, fetched by the
page's script with the session cookie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import plotly
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from db.models import StudyStatus
from service import repository
from service.api.comparisons import ComparisonId
from service.api.deps import SessionDep, StateDep, StudyId, current_user
from service.api.errors import responses
from service.api.views import study_out
from service.auth import Principal
from service.checkpoints.links import checkpoint_link
from service.comparisons import store
from service.comparisons.views import comparison_out
from service.dashboard.plots import comparison_plots, study_plots_at
from service.gate import PRINCIPAL_KEY
from workers.optimizer_specs import python_snippet

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

router = APIRouter(include_in_schema=False)
data = APIRouter(
    prefix="/dashboard-api",
    tags=["dashboard"],
    dependencies=[Depends(current_user)],
    responses=responses(401, 404, 429),
)


def _page(request: Request, state: StateDep, template: str, **context: Any) -> HTMLResponse:
    user = request.scope.get(PRINCIPAL_KEY)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "auth_required": state.settings.auth_required,
            "user": user.name if isinstance(user, Principal) else None,
            **context,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, state: StateDep) -> HTMLResponse:
    """The studies list, refreshed live from ``/api/v1/studies``."""
    return _page(request, state, "studies.html", page="studies")


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: StudyId, request: Request, state: StateDep) -> HTMLResponse:
    """One study, live while it runs."""
    return _page(request, state, "study.html", page="study", study_id=study_id)


@router.get("/comparisons/{comparison_id}", response_class=HTMLResponse)
def comparison_page(comparison_id: ComparisonId, request: Request, state: StateDep) -> HTMLResponse:
    """One comparison: its studies, verdict, curves side by side, seeds and weight norms."""
    return _page(request, state, "comparison.html", page="comparison", comparison_id=comparison_id)


@router.get("/dashboard/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js as the ``plotly`` package ships it: the dashboard needs no CDN."""
    return FileResponse(
        PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


@data.get("/studies/{study_id}/plots")
def plots(
    study_id: StudyId,
    state: StateDep,
    session: SessionDep,
    group: Literal["fast", "slow"] | None = None,
) -> dict[str, Any]:
    """Optuna's plots of the study as Plotly figures (JSON), with a note where none fits;
    ``group=fast`` or ``group=slow`` for one half (the page draws the fast half first).

    Cached per study and group; while the study runs, recomputed at most once per a few
    times their cost (``service.plot_cache``), so ``stale`` may be true and
    ``age_s`` says how old they are.
    """
    record = repository.get_study(session, study_id)
    out = study_out(session, record)
    if record.optuna_study_id is None:
        return {"n_complete": 0, "plots": [], "note": "the study has not started yet"}
    counts = out.counts

    def compute() -> dict[str, Any]:
        return state.offload.run(
            study_plots_at, state.settings.resolved_database_url, record.name, group
        )

    return state.plot_cache.get(
        key=(study_id, group),
        counts=(counts.complete, counts.pruned, counts.fail, counts.running),
        running=record.status in (StudyStatus.QUEUED, StudyStatus.RUNNING),
        compute=compute,
    )


@data.get("/studies/{study_id}/best")
def best_configuration(study_id: StudyId, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """The best trial's optimizer construction as Python to copy (``None`` before one), and
    the download path of its checkpoint when it saved one."""
    record = repository.get_study(session, study_id)
    out = study_out(session, record)
    if out.best_trial is None:
        return {"trial": None, "value": None, "python": None, "checkpoint": None}
    values = {**out.fixed, **out.best_trial.params}
    number = out.best_trial.number
    return {
        "trial": number,
        "value": out.best_trial.value,
        "python": python_snippet(out.optimizer, values),
        "checkpoint": checkpoint_link(state, record.id, record.optuna_study_id, number),
    }


@data.get("/comparisons/{comparison_id}/plots")
def comparison_figures(comparison_id: ComparisonId, state: StateDep) -> dict[str, Any]:
    """The comparison's figures, from its report (provisional while it runs)."""
    with state.sessions() as session:
        out = comparison_out(session, state.storage, store.get_comparison(session, comparison_id))
    if out.report is None:
        return {"plots": [], "note": "no report yet"}
    return {"plots": comparison_plots(out.report.model_dump()), "note": None}


router.include_router(data)
