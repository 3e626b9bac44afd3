"""Dispatching: the policy's snapshot from the loop's state, and its decision carried out.

A part of ``Scheduler`` (``core.py``): it builds ``policy.Snapshot`` (free capacity, what
each study may start, the running trials and whether each may be preempted), asks
``policy.decide`` and starts the trials it names (Optuna's ``ask``, then the cluster's
``submit``) and stops the ones it preempts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from optuna.trial import TrialState

from db.models import StudyStatus
from service.checkpoints import lineage as lineages
from service.cluster import ClusterUnavailable
from service.scheduler.attrs import ATTR_ATTEMPT, ATTR_ERROR, ATTR_PREEMPTIONS, ATTR_RETRY_OF
from service.scheduler.ending import StudyEnds
from service.scheduler.policy import Demand, Holder, Snapshot, decide
from service.scheduler.tracking import ActiveStudy, RunningTrial
from service.scheduler.unit_of_work import unit_of_work
from workers.messages import TrialRequest

log = logging.getLogger(__name__)

FLUSH_WAIT_S = 0.5
"""How long a start may wait for queued writes (a re-run's enqueue must be in the database
before Optuna's ``ask`` can hand it out); past it, the study's next start waits a tick, so
a slow database never holds the loop (and its lease) for long."""


class Dispatch(StudyEnds):
    """The part of the scheduler that starts and preempts trials."""

    _node_cache: tuple[float, float, float]
    _max_preemptions: int
    _preempt_non_checkpointing: bool
    _served: dict[str, int]
    _serves: int
    _max_gpus_per_user: float | None
    _trial_limits: Mapping[str, int | None]
    _checkpoint_url: str | None
    _stop: threading.Event

    def _capacity(self) -> tuple[float, float]:
        """Free CPUs and GPUs of the cluster, by this scheduler's own accounting."""
        at, cpus, gpus = self._node_cache
        if time.monotonic() - at > 2.0:
            nodes = self._executor.nodes()
            cpus, gpus = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
            self._node_cache = (time.monotonic(), cpus, gpus)
        used_cpus = sum(rt.cpus for rt in self._running.values())
        used_gpus = sum(rt.gpus for rt in self._running.values())
        return cpus - used_cpus, gpus - used_gpus

    def _demand(self, active: ActiveStudy) -> Demand | None:
        if active.draining or active.status not in (
            StudyStatus.QUEUED.value,
            StudyStatus.RUNNING.value,
        ):
            return None
        counts = active.counts
        room = active.max_concurrent - counts.running
        startable = min(room, counts.to_start(active.target))
        if startable <= 0:
            return None
        res = active.spec.resources
        return Demand(
            study_id=active.id,
            owner=active.owner,
            priority=active.priority,
            cpus=res.cpus,
            gpus=res.gpus,
            startable=startable,
            remaining=active.target - counts.finished,
            age=(active.created_at.timestamp(), active.id),
        )

    def _holder(self, key: int, rt: RunningTrial) -> Holder:
        active = self._studies.get(rt.study_id)
        checkpoints = active is not None and active.spec.checkpoints
        return Holder(
            key=key,
            study_id=rt.study_id,
            owner=active.owner if active is not None else "",
            priority=active.priority if active is not None else 0,
            cpus=rt.cpus,
            gpus=rt.gpus,
            started=rt.started,
            preemptible=active is not None
            and rt.preemptions < self._max_preemptions
            and (checkpoints or self._preempt_non_checkpointing),
            stopping=rt.stop_reason is not None,
        )

    def snapshot(self) -> Snapshot:
        """What the policy decides from (public for tests and diagnostics)."""
        free_cpus, free_gpus = self._capacity()
        demands = [d for a in self._studies.values() if (d := self._demand(a)) is not None]
        return Snapshot(
            demands=demands,
            running=[self._holder(k, rt) for k, rt in self._running.items()],
            free_cpus=free_cpus,
            free_gpus=free_gpus,
            served=dict(self._served),
            serves=self._serves,
            max_gpus_per_user=self._max_gpus_per_user,
            trial_limits=dict(self._trial_limits),
        )

    def _dispatch(self) -> None:
        """Start what the policy says, and ask the trials it names to make room.

        Nothing starts while the cluster is lost (reconnecting): it would refuse each trial,
        and the scheduler's view of its capacity lags by up to two seconds."""
        if self._stop.is_set() or not self._executor.connection().connected:
            return
        decision = decide(self.snapshot())
        self._served, self._serves = decision.served, decision.serves
        for key in decision.preempt:
            victim = self._running.get(key)
            if victim is not None:
                self._stop_trial(victim, "preempted")
        for study_id in decision.starts:
            active = self._studies.get(study_id)
            if active is not None and active.draining is None:
                self._start_trial(active)
                self._apply_stop_requests()  # a cancel acts mid-dispatch too

    def _start_trial(self, active: ActiveStudy) -> bool:
        if active.counts.waiting and not self._recorder.flush(timeout=FLUSH_WAIT_S):
            return False  # its re-runs are not enqueued in the database yet: next tick
        with unit_of_work(self._storage):  # one transaction: the trial and its values
            trial = active.study.ask(fixed_distributions=active.distributions)
        attrs = trial.user_attrs
        attempt = int(attrs.get(ATTR_ATTEMPT, 1))
        spec = active.spec
        knobs, args = spec.split_params(trial.params)
        seed_base = spec.seed if spec.seed is not None else active.id * 7919
        lineage = lineages.lineage_of(attrs, trial.number)  # re-runs: the first attempt's
        request = TrialRequest(
            study_id=active.id,
            trial_number=trial.number,
            workload=spec.workload,
            optimizer=spec.optimizer,
            knobs=knobs,
            args=args,
            seed=(seed_base * 1_000_003 + lineage) % (2**31),
            num_cpus=spec.resources.cpus,
            checkpoint_url=self._checkpoint_url,
            lineage=lineage,
        )
        res = spec.resources
        self._ledger.started(active.id, trial.number, rerun=ATTR_RETRY_OF in attrs)
        preemptions = int(attrs.get(ATTR_PREEMPTIONS, 0))
        try:
            handle = self._executor.submit(request, cpus=res.cpus, gpus=res.gpus)
        except Exception as err:
            if isinstance(err, ClusterUnavailable):  # expected: said in one line
                log.warning("trial %d of %s not submitted: %s", trial.number, active.name, err)
            else:
                log.exception("could not submit trial %d of %s", trial.number, active.name)
            rt = RunningTrial(active.id, trial, None, request, attempt, 0.0, 0.0, preemptions)
            self._close(
                rt,
                active,
                TrialState.FAIL,
                {ATTR_ERROR: f"submit: {err}"},
                retry_reason="submit failed",
            )
            return False
        self._running[id(handle)] = RunningTrial(
            active.id, trial, handle, request, attempt, res.cpus, res.gpus, preemptions
        )
        return True
