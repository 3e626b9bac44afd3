"""``GET /api/v1/studies/{id}/trials/{number}/checkpoint``: a trial's last checkpoint.

The file is what the trial's workload saved with ``ctx.save_checkpoint`` (written by
``torch.save``): ``torch.load(path, weights_only=True)["state"]`` gives it back. Model
weights can be worth more than a study's metrics, so only the study's owner (or an
admin) may download them.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException

from service import repository
from service.api.deps import StateDep, StudyId, TrialNumber, UserDep
from service.api.errors import responses
from service.checkpoints.lineage import trial_lineage
from service.errors import Forbidden, NotFound
from service.schemas import ErrorOut
from workers.checkpoints import CheckpointStore, CheckpointStoreError

router = APIRouter(prefix="/api/v1/studies/{study_id}/trials", tags=["trials"])


@router.get(
    "/{number}/checkpoint",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "the checkpoint file (torch.save of {format, step, state})",
        },
        **responses(401, 403, 404, 503),
        404: {
            "model": ErrorOut,
            "description": "no such study or trial, or the trial has no checkpoint (its "
            "workload saves none, or it was deleted after its retention)",
        },
    },
)
def download_checkpoint(
    study_id: StudyId, number: TrialNumber, state: StateDep, user: UserDep
) -> StreamingResponse:
    """The last checkpoint of a trial (for a re-run trial: of its lineage).

    After a study ends only its best trial's checkpoint is kept past the retention
    (``ADAMP_TUNE_CHECKPOINT_RETENTION_S``)."""
    with state.sessions() as session:
        study = repository.get_study(session, study_id)
    if study.owner != user.name and not user.admin:
        raise Forbidden(
            f"study {study_id} belongs to {study.owner}; only they or an admin can "
            "download its checkpoints"
        )
    url = state.settings.resolved_checkpoint_url
    if url is None:
        raise NotFound("checkpoints are off on this service (ADAMP_TUNE_CHECKPOINTS=false)")
    lineage = (
        None
        if study.optuna_study_id is None
        else trial_lineage(state.storage, study.optuna_study_id, number)
    )
    if lineage is None:
        raise NotFound(f"study {study_id} has no trial {number}")
    try:
        chunks = CheckpointStore(url).chunks(study_id, lineage)
    except CheckpointStoreError as err:
        raise HTTPException(503, str(err)) from err
    if chunks is None:
        raise NotFound(
            f"trial {number} of study {study_id} has no checkpoint: its workload saves none, "
            "it ended before its first one, or it was deleted after the study ended "
            "(only the best trial's is kept past ADAMP_TUNE_CHECKPOINT_RETENTION_S)"
        )
    filename = re.sub(r"[^\w.-]", "_", f"{study.name}-trial-{number}.pt", flags=re.ASCII)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
