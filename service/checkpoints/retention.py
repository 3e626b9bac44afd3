"""Keeping the checkpoint store bounded: what stays after a study ends, and for how long.

While a study runs, each trial lineage holds one checkpoint (each save replaces the last).
When a study has ended, the best trial's checkpoint stays (it can be downloaded), and those
of its other trials are deleted ``retention_s`` after the study's end. A study folder whose
study no longer exists in the database is deleted whole. ``sweep`` does one pass; the
service runs it every ``checkpoint_sweep_s`` in a thread of its own (``Janitor``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ACTIVE_STATUSES, Study, utcnow
from service.checkpoints.lineage import lineage_of
from workers.checkpoints import CheckpointStore

log = logging.getLogger(__name__)


@dataclass
class Swept:
    """What one pass deleted."""

    studies: int = 0
    checkpoints: int = 0


def best_lineage(storage: optuna.storages.BaseStorage, optuna_study_id: int) -> int | None:
    """The lineage of the study's best trial (whose checkpoint is kept), if it has one."""
    try:
        best = storage.get_best_trial(optuna_study_id)
    except (ValueError, RuntimeError):  # no complete trial, or a multi-objective study
        return None
    return lineage_of(best.user_attrs, best.number)


def sweep(
    store: CheckpointStore,
    sessions: sessionmaker[Session],
    storage: optuna.storages.BaseStorage,
    retention_s: float,
) -> Swept:
    """Delete the checkpoints past their retention and those of deleted studies."""
    swept = Swept()
    folders = store.studies()
    if not folders:
        return swept
    with sessions() as session:
        rows = session.execute(
            select(Study.id, Study.status, Study.finished_at, Study.optuna_study_id).where(
                Study.id.in_(folders)
            )
        ).all()
    known = {row.id: row for row in rows}
    cutoff = utcnow() - timedelta(seconds=retention_s)
    for study_id in folders:
        row = known.get(study_id)
        if row is None:
            store.delete_study(study_id)
            swept.studies += 1
            continue
        if row.status in ACTIVE_STATUSES or row.finished_at is None or row.finished_at > cutoff:
            continue
        keep = best_lineage(storage, row.optuna_study_id) if row.optuna_study_id else None
        for lineage in store.lineages(study_id):
            if lineage != keep:
                store.delete(study_id, lineage)
                swept.checkpoints += 1
    if swept.studies or swept.checkpoints:
        log.info(
            "checkpoints: deleted %d past their retention and %d folders of deleted studies",
            swept.checkpoints,
            swept.studies,
        )
    return swept


class Janitor:
    """Runs ``sweep`` every ``every_s`` seconds in a daemon thread until ``stop()``."""

    def __init__(
        self,
        store: CheckpointStore,
        sessions: sessionmaker[Session],
        storage: optuna.storages.BaseStorage,
        retention_s: float,
        every_s: float,
    ) -> None:
        self._args = (store, sessions, storage, retention_s)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sweep(*self._args)
            except Exception:  # the store or the database is down: try again next time
                log.warning("could not clean up the checkpoint store", exc_info=True)
            self._stop.wait(self._every_s)
