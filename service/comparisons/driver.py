"""Drives comparisons: creates their tuning studies, then, once those end, the evaluation
studies of each optimizer's best configuration, then writes the report.

Everything it knows is in the database, and every step is safe to repeat (a study is
looked up by its name before it is created), so a restarted service carries on where the
last one stopped. It runs in the process that holds the scheduler lease, in a thread of
its own, and talks to the scheduler only through ordinary studies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Comparison, Study, StudyStatus, utcnow
from service import repository
from service.comparisons import report, store
from service.comparisons.schemas import ComparisonCreate
from service.errors import Conflict
from service.names import name_key
from service.schemas import StudyCreate

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
MIN_EVALUATED = 2
"""Complete evaluation trials each optimizer needs for a spread, hence a test."""
EVAL_SEED_OFFSET = 1
"""Evaluation studies use the comparison's seed plus this: their trials' seeds differ from
every tuning trial's, and are the same list for every optimizer."""


def _request(comparison: Comparison) -> ComparisonCreate:
    return ComparisonCreate.model_validate(comparison.spec)


def _ensure_study(
    sessions: sessionmaker[Session],
    storage: optuna.storages.BaseStorage,
    comparison: Comparison,
    optimizer: str,
    role: str,
    request: StudyCreate,
) -> None:
    """Create (or adopt: after a crash between the two writes, or when the API and the
    driver both got here) and link one study."""
    for attempt in range(2):
        with sessions() as session:
            existing = session.scalars(
                select(Study).where(Study.name_key == name_key(request.name))
            ).first()
        if existing is not None:
            if existing.owner != comparison.owner:
                raise Conflict(f"study name {request.name!r} was taken by {existing.owner}")
            study_id = existing.id
            break
        try:
            study_id = repository.create_study(
                sessions, storage, request, owner=comparison.owner
            ).id
            break
        except Conflict:
            if attempt:
                raise
    if store.link(sessions, comparison.id, optimizer, role, study_id):
        with sessions.begin() as session:
            repository.add_event(
                session, study_id, "comparison", f"{role} study of comparison {comparison.name}"
            )


def ensure_studies(
    sessions: sessionmaker[Session], storage: optuna.storages.BaseStorage, comparison_id: int
) -> None:
    """Create whichever studies the comparison's phase needs and lacks."""
    with sessions() as session:
        comparison = store.get_comparison(session, comparison_id)
        linked = {
            (link.optimizer, link.role): study
            for link, study in store.parts(session, comparison_id)
        }
        session.expunge_all()
    if comparison.status not in (StudyStatus.QUEUED.value, StudyStatus.RUNNING.value):
        return  # cancelled or ended meanwhile: nothing more to start
    request = _request(comparison)
    seed = int(comparison.spec["seed"])
    for optimizer in request.optimizers:
        if comparison.phase == "tuning" and (optimizer, "tune") not in linked:
            study = request.tuning_request(optimizer, seed)
            _ensure_study(sessions, storage, comparison, optimizer, "tune", study)
        if comparison.phase == "evaluating" and (optimizer, "eval") not in linked:
            tuned = linked[(optimizer, "tune")]
            best = report.best_params(storage, tuned)
            assert best is not None  # checked before the phase changed
            study = request.evaluation_request(optimizer, best, seed + EVAL_SEED_OFFSET)
            _ensure_study(sessions, storage, comparison, optimizer, "eval", study)


def cancel_parts(sessions: sessionmaker[Session], comparison_id: int, by: str) -> list[int]:
    """Cancel every study of the comparison still queued or running; their ids."""
    with sessions() as session:
        studies = [s for _, s in store.parts(session, comparison_id)]
    cancelled = []
    for study in studies:
        if study.status in (StudyStatus.QUEUED.value, StudyStatus.RUNNING.value):
            try:
                repository.cancel_study(sessions, study.id, by=by)
                cancelled.append(study.id)
            except Conflict:
                continue  # ended meanwhile
    return cancelled


def advance(
    sessions: sessionmaker[Session],
    storage: optuna.storages.BaseStorage,
    comparison_id: int,
    stop_study: Callable[[int], None] = lambda _: None,
) -> None:
    """Take the comparison one step further, if its studies allow."""
    ensure_studies(sessions, storage, comparison_id)
    with sessions() as session:
        comparison = store.get_comparison(session, comparison_id)
        rows = store.parts(session, comparison_id)
        session.expunge_all()
    if comparison.status not in (StudyStatus.QUEUED.value, StudyStatus.RUNNING.value):
        for study_id in cancel_parts(sessions, comparison_id, by="its comparison"):
            stop_study(study_id)  # created by a step that raced with the cancel
        return
    phase_role = "tune" if comparison.phase == "tuning" else "eval"
    current = [(link, study) for link, study in rows if link.role == phase_role]
    statuses = {study.status for _, study in current}
    if comparison.status == StudyStatus.QUEUED.value and statuses & {
        StudyStatus.RUNNING.value,
        StudyStatus.COMPLETED.value,
    }:
        store.transition(sessions, comparison_id, StudyStatus.RUNNING, started_at=utcnow())
    for link, study in current:
        if study.status in (StudyStatus.FAILED.value, StudyStatus.CANCELLED.value):
            status = StudyStatus.FAILED if study.status == "failed" else StudyStatus.CANCELLED
            error = f"{link.optimizer}'s {link.role} study {study.id} {study.status}" + (
                f": {study.error}" if study.error else ""
            )
            if store.end(
                sessions, comparison_id, status, reason=f"{link.role} study ended", error=error
            ):
                for study_id in cancel_parts(sessions, comparison_id, by="its comparison"):
                    stop_study(study_id)
            return
    if len(current) < len(comparison.spec["optimizers"]) or statuses != {
        StudyStatus.COMPLETED.value
    }:
        return
    if comparison.phase == "tuning":
        empty = [
            link.optimizer for link, study in current if report.best_params(storage, study) is None
        ]
        if empty:
            store.end(
                sessions,
                comparison_id,
                StudyStatus.FAILED,
                reason="no complete trial",
                error=f"no complete tuning trial for {', '.join(empty)}: nothing to evaluate",
            )
            return
        store.set_values(sessions, comparison_id, phase="evaluating")
        ensure_studies(sessions, storage, comparison_id)
        return
    with sessions() as session:
        comparison = store.get_comparison(session, comparison_id)
        final = report.build(storage, comparison, store.parts(session, comparison_id), final=True)
    short = [
        f"{o['optimizer']} ({(o['evaluation'] or {}).get('n', 0)} of {comparison.spec['seeds']})"
        for o in final["optimizers"]
        if (o["evaluation"] or {}).get("n", 0) < MIN_EVALUATED
    ]
    if short:  # no spread to test: a failure to look into, not a verdict
        store.end(
            sessions,
            comparison_id,
            StudyStatus.FAILED,
            reason="evaluation failed",
            error="too few evaluation trials completed to compare: "
            + ", ".join(short)
            + "; see the errors of the evaluation studies' trials",
            report=final,
        )
        return
    store.end(sessions, comparison_id, StudyStatus.COMPLETED, reason="evaluated", report=final)


class ComparisonDriver:
    """A thread that advances every active comparison once a second while
    ``is_leader()`` (this process holds the scheduler lease)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: optuna.storages.BaseStorage,
        is_leader: Callable[[], bool],
        stop_study: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._is_leader = is_leader
        self._stop_study = stop_study
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="adamp-tune-comparisons", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def step(self) -> None:
        """Advance each active comparison once; one that fails is logged, not the others."""
        with self._sessions() as session:
            ids = store.active_comparison_ids(session)
        for comparison_id in ids:
            try:
                advance(self._sessions, self._storage, comparison_id, self._stop_study)
            except Conflict as err:
                store.end(
                    self._sessions, comparison_id, StudyStatus.FAILED, "error", error=str(err)
                )
            except Exception:
                log.exception("comparison %s: step failed; retrying", comparison_id)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            if self._is_leader():
                try:
                    self.step()
                except Exception:
                    log.exception("comparison driver step failed; retrying")
