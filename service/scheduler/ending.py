"""How studies end: limits (timeout, every trial failing), the last trial, a shutdown.

A part of ``Scheduler`` (``core.py``): it reads the ledger's counts and queues the status
changes through the recorder, after the writes of the study's last trials.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from db.models import StudyStatus, utcnow
from service import metrics, repository
from service.cluster import Ended
from service.scheduler.attrs import ATTR_STOP_REASON
from service.scheduler.lease import Lease
from service.scheduler.outcomes import Outcomes, ignore
from service.scheduler.tracking import ActiveStudy

log = logging.getLogger(__name__)

FAIL_STUDY_AFTER = 3
"""A study whose first this-many finished trials all raised is marked failed."""


class StudyEnds(Outcomes):
    """The part of the scheduler that ends studies and stops the loop."""

    _sessions: sessionmaker[Session]
    _ended: set[int]
    lease: Lease
    role: str

    def _transition(self, study_id: int, status: StudyStatus, **kwargs: Any) -> None:
        """A status change, queued after the writes before it."""
        sessions = self._sessions
        self._recorder.call(
            lambda: ignore(repository.transition(sessions, study_id, status, **kwargs)),
            joins=False,
        )

    def _mark_started(self, active: ActiveStudy) -> None:
        """A queued study with a trial on the cluster becomes running."""
        if active.status != StudyStatus.QUEUED.value or not active.counts.running:
            return
        now = utcnow()
        self._transition(
            active.id,
            StudyStatus.RUNNING,
            event="started",
            message="first trial started",
            from_statuses=(StudyStatus.QUEUED.value,),
            started_at=now,
        )
        active.status, active.started_at = StudyStatus.RUNNING.value, now

    def _fail_waiting(self, active: ActiveStudy, reason: str) -> None:
        """Enqueued re-runs that will never start are failed, so none stays waiting."""
        waiting = active.counts.waiting
        if waiting == 0:
            return
        storage, optuna_id = self._storage, active.study._study_id

        def fail_them() -> None:
            for trial in storage.get_all_trials(
                optuna_id, deepcopy=False, states=(TrialState.WAITING,)
            ):
                storage.set_trial_user_attr(trial._trial_id, ATTR_STOP_REASON, reason)
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

        self._recorder.call(fail_them)
        self._ledger.waiting_failed(active.id, waiting)

    def _check_limits(self, active: ActiveStudy) -> None:
        """Drain a study past its ``timeout_s``, or one whose every trial so far raised."""
        if active.draining is not None:
            return
        counts = active.counts
        if active.timed_out:
            self._drain(active, "timeout")
        elif counts.raised >= min(active.spec.n_trials, FAIL_STUDY_AFTER) and not counts.succeeded:
            self._drain(active, "failed")

    def _maybe_end(self, active: ActiveStudy) -> None:
        self._check_limits(active)
        counts = active.counts
        if counts.running:
            return
        sampler = active.study.sampler
        exhausted = (
            isinstance(sampler, optuna.samplers.GridSampler)
            and counts.waiting == 0
            and sampler.is_exhausted(active.study)
        )
        if active.draining == "shutdown":
            return
        if active.draining in ("cancelled", "timeout", "failed"):
            self._fail_waiting(active, active.draining)
        elif not ((counts.finished >= active.spec.n_trials and counts.waiting == 0) or exhausted):
            return
        self._studies.pop(active.id, None)
        self._ledger.close(active.id)
        self._ended.add(active.id)  # its end is queued: never taken over again meanwhile
        if active.draining == "cancelled":
            return  # the API already recorded it
        if active.draining == "failed":
            self._transition(
                active.id,
                StudyStatus.FAILED,
                event="failed",
                message=f"every trial failed; last error: {active.last_error}",
                stop_reason="failed",
                error=active.last_error,
                finished_at=utcnow(),
            )
            return
        grid_short = active.target < active.spec.n_trials
        reason = active.draining or ("grid exhausted" if grid_short else "n_trials")
        self._transition(
            active.id,
            StudyStatus.COMPLETED,
            event="completed",
            message=f"completed ({reason}) with {counts.finished} finished trials",
            stop_reason=reason,
            finished_at=utcnow(),
        )

    def _fail_study_record(self, study_id: int, error: str) -> None:
        """A study that cannot even be loaded (written at once: nothing of it is queued)."""
        repository.transition(
            self._sessions,
            study_id,
            StudyStatus.FAILED,
            event="failed",
            message=error,
            stop_reason="error",
            error=error,
            finished_at=utcnow(),
        )

    def _shutdown(self, grace_s: float) -> None:
        if not self.lease.held:
            return
        for active in self._studies.values():
            self._drain(active, "shutdown")
        deadline = time.monotonic() + grace_s
        while self._running and time.monotonic() < deadline:
            try:
                self._collect(0.1)
            except Exception:  # the cluster went down with us (a signal to the whole group)
                log.warning("the cluster did not answer while stopping", exc_info=True)
                break
            self._enforce_stops()  # what does not stop is recorded within 2 * STOP_GRACE_S
        for rt in list(self._running.values()):  # past the grace period: record them anyway
            rt.pending = Ended()
            self._process(rt)
        if not self._recorder.flush(timeout=max(5.0, deadline - time.monotonic())):
            log.warning("stopped with writes unwritten; their trials re-run at the next start")
        self.lease.release()
        self.role = "off"
        metrics.SCHEDULER_LEADER.set(0)
        log.info("scheduler stopped")
