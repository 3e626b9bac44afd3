"""Whether a trial has a checkpoint to download, for pages that offer the link."""

from __future__ import annotations

import logging

from service.checkpoints.lineage import trial_lineage
from service.state import AppState
from workers.checkpoints import CheckpointStore, CheckpointStoreError

log = logging.getLogger(__name__)


def checkpoint_link(
    state: AppState, study_id: int, optuna_study_id: int | None, number: int
) -> str | None:
    """The API path that downloads trial ``number``'s checkpoint, ``None`` when it has
    none (or the store cannot be reached: the page then offers no link, and says nothing
    it cannot back up)."""
    url = state.settings.resolved_checkpoint_url
    if url is None or optuna_study_id is None:
        return None
    lineage = trial_lineage(state.storage, optuna_study_id, number)
    if lineage is None:
        return None
    try:
        if CheckpointStore(url).size(study_id, lineage) is None:
            return None
    except (CheckpointStoreError, OSError):
        log.warning("checkpoints: cannot reach the store at %s", url, exc_info=True)
        return None
    return f"/api/v1/studies/{study_id}/trials/{number}/checkpoint"
