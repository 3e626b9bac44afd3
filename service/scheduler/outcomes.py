"""How the loop records what its trials did, and how it stops them.

A part of ``Scheduler`` (``core.py``) kept apart because it is one job: turn each outcome
of a trial (placement, report, result, stop, crash) into ledger events and queued writes
(``recorder.py``), re-run what died through no fault of its own (a crash, a shutdown, a
preemption), and stop trials (cancel, timeout, pruning, preemption) within a grace period.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from service import metrics
from service.checkpoints import lineage as lineages
from service.cluster import Cluster, Crashed, Ended, Event, Outcome, Raised
from service.scheduler.attrs import (
    ATTR_ATTEMPT,
    ATTR_DURATION,
    ATTR_ERROR,
    ATTR_PLACEMENT,
    ATTR_PREEMPTIONS,
    ATTR_RETRIED,
    ATTR_RETRY_OF,
    ATTR_SIF,
    ATTR_STOP_REASON,
)
from service.scheduler.ledger import Ending, Ledger
from service.scheduler.recorder import Recorder
from service.scheduler.tracking import ActiveStudy, RunningTrial
from workers.checkpoints import CheckpointStoreError
from workers.messages import Finished, Report, Resumed, Started

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
"""A trial asked to stop (cancel, timeout, pruning, preemption, shutdown) that has not
stopped after this long has its worker killed; after twice this long it is recorded as
stopped anyway, so its CPUs and GPUs count as free whatever its node does."""

RERUN_REASONS = ("shutdown", "preempted")
"""Stops that re-run the trial (the others end it for good)."""


def ignore(_: object) -> None:
    """Writes queued for their effect only."""


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None) -> None:
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        study.tell(trial, state=state)


class Outcomes:
    """The outcome-recording and stopping half of the scheduler."""

    _studies: dict[int, ActiveStudy]
    _storage: optuna.storages.BaseStorage
    _running: dict[int, RunningTrial]
    _executor: Cluster
    _recorder: Recorder
    _ledger: Ledger
    _max_attempts: int
    _stop_requests: queue.SimpleQueue[int]
    _stop: threading.Event

    # ----------------------------------------------------------------- collecting

    def _collect(self, timeout: float) -> None:
        """Record what the running trials sent since the last call (and what is pending)."""
        for waiting in [rt for rt in self._running.values() if rt.pending is not None]:
            self._process(waiting)
        handles = [rt.handle for rt in self._running.values() if rt.pending is None]
        for handle, outcome in self._executor.poll(handles, timeout if handles else 0):
            polled = self._running.get(id(handle))
            if polled is not None:
                polled.pending = outcome
                self._process(polled)

    def _process(self, rt: RunningTrial) -> None:
        """Apply ``rt.pending``; on an error it stays pending for the next tick."""
        outcome = rt.pending
        if outcome is None:
            return
        try:
            self._on_outcome(rt, outcome)
        except Exception:
            log.warning("recording an outcome of trial %d failed", rt.trial.number, exc_info=True)
            return
        rt.pending = None

    def _on_outcome(self, rt: RunningTrial, outcome: Outcome) -> None:
        active = self._studies.get(rt.study_id)
        trial_id = rt.trial._trial_id
        match outcome:
            case Event(event=Started(placement=p, device=device)):
                placement = {
                    "node_id": p.node_id,
                    "node_ip": p.node_ip,
                    "hostname": p.hostname,
                    "pid": p.pid,
                    "gpu_ids": list(p.gpu_ids),
                    "cuda_visible_devices": p.cuda_visible_devices,
                    "device": device,
                }
                self._recorder.user_attrs(trial_id, {ATTR_PLACEMENT: placement})
            case Event(event=Resumed(step=step)):
                storage, trial = self._storage, rt.trial
                # In order: the earlier attempts' reports are written before this copy.
                self._recorder.call(lambda: ignore(lineages.carry_over(storage, trial, step)))
            case Event(event=Report() as report):
                rt.last_sif = report.scale_invariant_fraction
                if rt.stop_reason is not None:
                    return
                if active is None or not active.prunes:
                    self._recorder.report(trial_id, report.step, report.value)
                    return
                # A study with a pruner: written here, so the pruner decides at once on
                # every report (queued, its decision would come after short trials end).
                storage, study = self._storage, active.study
                storage.set_trial_intermediate_value(trial_id, report.step, report.value)
                if study.pruner.prune(study, storage.get_trial(trial_id)):
                    self._stop_trial(rt, "pruned")
            case Event(event=Finished() as done):
                attrs: dict[str, Any] = {**done.user_attrs, ATTR_DURATION: done.duration_s}
                if done.scale_invariant_fraction is not None:
                    attrs[ATTR_SIF] = done.scale_invariant_fraction
                if rt.stop_reason is not None:  # it finished before our stop arrived
                    attrs[ATTR_STOP_REASON] = rt.stop_reason
                self._close(rt, active, TrialState.COMPLETE, attrs, value=done.value)
            case Ended():
                reason = rt.stop_reason or "stopped"
                attrs = {ATTR_STOP_REASON: reason}
                if rt.last_sif is not None:
                    attrs[ATTR_SIF] = rt.last_sif
                if reason == "pruned":
                    self._close(rt, active, TrialState.PRUNED, attrs)
                else:
                    retry = reason if reason in RERUN_REASONS else None
                    self._close(rt, active, TrialState.FAIL, attrs, retry_reason=retry)
            case Raised(error=error) if rt.stop_reason is not None:
                # Asked to stop, it raised on the way out (Ray's cancel can interrupt the
                # worker mid-setup: "TypeError: 'Handlers' object is not callable"): the
                # stop ended it, so a preempted trial is re-run, not failed for good.
                log.info("trial %d raised while stopping: %s", rt.trial.number, error)
                self._on_outcome(rt, Ended())
            case Raised(error=error) if error.startswith(CheckpointStoreError.__name__):
                # The store, not the configuration, failed: run it again like a crash.
                attrs = {ATTR_ERROR: error, ATTR_STOP_REASON: "checkpoint store"}
                self._close(rt, active, TrialState.FAIL, attrs, retry_reason="checkpoint store")
            case Raised(error=error):
                self._close(rt, active, TrialState.FAIL, {ATTR_ERROR: error}, raised=error)
            case Crashed() if rt.stop_reason is not None:
                # Killed because it was asked to stop: the stop, not a crash, ended it.
                self._on_outcome(rt, Ended())
            case Crashed(error=error, reason=reason):
                attrs = {ATTR_ERROR: error, ATTR_STOP_REASON: reason}
                if active is not None:
                    log.warning(
                        "study %s: trial %d lost its worker: %s",
                        active.name,
                        rt.trial.number,
                        error,
                    )
                self._close(rt, active, TrialState.FAIL, attrs, retry_reason=reason)

    def _close(
        self,
        rt: RunningTrial,
        active: ActiveStudy | None,
        state: TrialState,
        attrs: dict[str, Any],
        *,
        value: float | None = None,
        retry_reason: str | None = None,
        raised: str | None = None,
    ) -> None:
        """Record how a trial ended, re-run it if it died through no fault of its own.

        A preempted trial is re-run whatever its attempts (it did not fail); the others
        at most ``max_trial_attempts`` times."""
        preempted = retry_reason == "preempted"
        retry = (
            retry_reason is not None
            and active is not None
            and active.draining in (None, "shutdown")
            and (preempted or rt.attempt < self._max_attempts)
        )
        if retry:
            attrs = {**attrs, ATTR_RETRIED: True}
        self._recorder.user_attrs(rt.trial._trial_id, attrs)
        study, trial = rt.trial.study, rt.trial
        self._recorder.call(lambda: _tell(study, trial, state, value))
        self._running.pop(id(rt.handle), None)
        ending: Ending
        if retry:
            ending = "retried"
        elif state == TrialState.COMPLETE:
            ending = "complete"
        elif state == TrialState.PRUNED:
            ending = "pruned"
        else:
            ending = "raised" if raised is not None else "failed"
        self._ledger.ended(rt.study_id, rt.trial.number, ending)
        if retry and active is not None and retry_reason is not None:
            self._enqueue_rerun(active, rt, retry_reason)
            return
        metrics.TRIALS_FINISHED.labels(state.name.lower()).inc()
        if active is None:
            return
        if raised is not None:
            active.last_error = raised
        elif retry_reason is not None:
            self._event(
                active,
                "trial_failed",
                f"trial {rt.trial.number} failed {rt.attempt} times ({retry_reason}); not re-run",
                {"trial": rt.trial.number},
            )

    def _enqueue_rerun(self, active: ActiveStudy, rt: RunningTrial, reason: str) -> None:
        number, params = rt.trial.number, dict(rt.trial.params)
        lineage = rt.request.lineage if rt.request.lineage is not None else number
        user_attrs: dict[str, Any] = {ATTR_RETRY_OF: number, lineages.ATTR_LINEAGE: lineage}
        if reason == "preempted":
            user_attrs[ATTR_ATTEMPT] = rt.attempt  # not a failed attempt
            user_attrs[ATTR_PREEMPTIONS] = rt.preemptions + 1
        else:
            user_attrs[ATTR_ATTEMPT] = rt.attempt + 1
            if rt.preemptions:
                user_attrs[ATTR_PREEMPTIONS] = rt.preemptions
        self._requeue(active, number, params, user_attrs, reason)

    def _requeue(
        self,
        active: ActiveStudy,
        number: int,
        params: dict[str, Any],
        user_attrs: dict[str, Any],
        reason: str,
    ) -> None:
        study = active.study
        self._recorder.call(
            lambda: study.enqueue_trial(params, user_attrs=user_attrs, skip_if_exists=False)
        )
        self._ledger.requeued(active.id)
        metrics.TRIALS_RETRIED.labels(reason).inc()
        kind = "trial_preempted" if reason == "preempted" else "trial_retried"
        text = (
            f"trial {number} preempted by a higher-priority study; re-queued"
            if reason == "preempted"
            else f"trial {number} re-run after: {reason}"
        )
        self._event(active, kind, text, {"trial": number})

    def _event(
        self, active: ActiveStudy, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        self._recorder.event(active.id, kind, message, data)

    # ----------------------------------------------------------------- stopping

    def _stop_trial(self, rt: RunningTrial, reason: str) -> None:
        if rt.stop_reason is None:
            rt.stop_reason = reason
            rt.stop_asked = time.monotonic()
            self._executor.cancel(rt.handle)

    def _apply_stop_requests(self) -> None:
        """Drain the studies the API cancelled since the last call (``request_stop``)."""
        while True:
            try:
                study_id = self._stop_requests.get_nowait()
            except queue.Empty:
                return
            active = self._studies.get(study_id)
            if active is not None:
                self._drain(active, "cancelled")

    def _enforce_stops(self) -> None:
        """Kill what did not stop within ``STOP_GRACE_S``; past twice that, record it as
        stopped without waiting for its worker any longer."""
        now = time.monotonic()
        grace = _grace()
        for rt in list(self._running.values()):
            if rt.stop_asked is None or rt.pending is not None:
                continue
            waited = now - rt.stop_asked
            if waited > 2 * grace:
                log.warning("trial %d did not stop; recorded as stopped", rt.trial.number)
                rt.pending = Ended()
                self._process(rt)
            elif waited > grace and not rt.forced:
                log.warning("trial %d did not stop when asked; killing it", rt.trial.number)
                rt.forced = True
                self._executor.cancel(rt.handle, force=True)

    def _drain(self, active: ActiveStudy, reason: str) -> None:
        """Start no more trials of ``active`` and stop the running ones."""
        if active.draining is None:
            active.draining = reason
        for rt in self._running.values():
            if rt.study_id == active.id:
                self._stop_trial(rt, reason)


def _grace() -> float:
    """``STOP_GRACE_S``, read at each use so tests can shorten it."""
    return STOP_GRACE_S
