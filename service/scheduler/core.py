"""The scheduler loop: queued studies -> Optuna ask -> trials on the cluster -> Optuna tell.

One process at a time holds the scheduler lease (``lease.py``) and runs this loop in a
thread of its own. Each iteration (``tick``) is a short list of phases:

1. renew the lease (a newly acquired lease first fails the orphans of the last holder:
   trials left RUNNING are marked FAIL and re-run with the same parameters);
2. re-read the queued and running studies (a cancel or a ``PATCH`` shows up here);
3. collect the outcomes of the running trials (``outcomes.py``): reports, results,
   crashes become ledger events (``ledger.py``) and queued writes (``recorder.py``, on a
   thread of its own, so the database never holds this loop);
4. ask the policy (``policy.py``, a pure function of a snapshot) which trials to start
   and which lower-priority trials to preempt, and do it (``dispatch.py``);
5. end studies: ``n_trials`` finished (complete, pruned, or failed for good), the grid
   exhausted, ``timeout_s`` passed, or every trial failing.

A trial slot is used by each trial that ended for good and each trial running or waiting
to be re-run; a failed trial that was re-run frees its slot for the re-run (user attribute
``retried``), so a study ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session, sessionmaker

from db.models import Study, StudyStatus, utcnow
from service import metrics, repository, trial_queries
from service.checkpoints import lineage as lineages
from service.cluster import Cluster
from service.optuna_glue import build_pruner, build_sampler, distributions_of
from service.scheduler.attrs import (
    ATTR_ATTEMPT,
    ATTR_PREEMPTIONS,
    ATTR_RETRIED,
    ATTR_RETRY_OF,
    ATTR_STOP_REASON,
)
from service.scheduler.dispatch import Dispatch
from service.scheduler.lease import Lease
from service.scheduler.ledger import Counts, Ledger
from service.scheduler.outcomes import ignore
from service.scheduler.recorder import Recorder
from service.scheduler.tracking import ActiveStudy, DrivenStudy, RunningTrial
from service.study_spec import StudySpec

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 0.05
IDLE_SLEEP_S = 0.2
CREATION_GRACE_S = 60.0
"""How long a new study's row may wait for its Optuna study before the scheduler gives up."""


class Scheduler(Dispatch):
    """Runs studies on the cluster; start it with ``start()``, stop it with ``stop()``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: optuna.storages.BaseStorage,
        executor: Cluster,
        *,
        lease_s: float = 10.0,
        max_trial_attempts: int = 3,
        max_gpus_per_user: float | None = None,
        trial_limits: Callable[[], Mapping[str, int | None]] | None = None,
        holder: str | None = None,
        max_preemptions: int = 3,
        preempt_non_checkpointing: bool = False,
        checkpoint_url: str | None = None,
    ) -> None:
        self._sessions = sessions
        # One cache layer for every read and write of Optuna's tables in this process.
        self._storage = optuna.storages.get_storage(storage)
        self._recorder = Recorder(self._storage)
        self._ledger = Ledger()
        self._executor = executor
        self._max_attempts = max_trial_attempts
        self._max_gpus_per_user = max_gpus_per_user
        self._max_preemptions = max_preemptions
        self._preempt_non_checkpointing = preempt_non_checkpointing
        self._checkpoint_url = checkpoint_url
        self._read_trial_limits = trial_limits
        self._trial_limits: Mapping[str, int | None] = {}
        """Trials in flight per user (``""``: anyone not listed), re-read at each sync."""
        self._served: dict[str, int] = {}  # user -> when they were last given a slot
        self._serves = 0
        self.lease = Lease(sessions, holder or f"scheduler-{uuid.uuid4().hex[:12]}", lease_s)
        self._lease_every = lease_s / 4
        self._last_lease = 0.0
        self._last_lease_ok = time.monotonic()
        self._last_sync = 0.0
        self._studies: dict[int, ActiveStudy] = {}
        self._ended: set[int] = set()
        """Studies this scheduler ended whose status change may not be written yet."""
        self._running: dict[int, RunningTrial] = {}  # id(handle) -> trial
        self._stop = threading.Event()
        self._stop_requests: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._node_cache: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at, cpus, gpus
        self._grace_s = 20.0
        self.role = "starting"

    # ----------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Run the loop in a background thread."""
        self._recorder.start()
        self._thread = threading.Thread(target=self.run, name="adamp-tune-scheduler", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop starting trials, stop the running ones, record them, release the lease.

        Trials stopped here are failed with ``stop_reason=shutdown`` and enqueued to re-run,
        so the next scheduler picks them up; nothing is left marked running.
        """
        self._stop.set()
        self._grace_s = grace_s
        if self._thread is not None:
            self._thread.join(timeout=grace_s + 10)

    def live_cpus(self) -> float:
        """CPUs of the cluster's live nodes, as the executor last saw them."""
        return sum(n.cpus for n in self._executor.nodes())

    def request_stop(self, study_id: int) -> None:
        """Stop a cancelled study's trials at the loop's next step (any thread may call it)."""
        self._stop_requests.put(study_id)

    def counts(self, study_id: int) -> Counts | None:
        """The ledger's counts of a study this scheduler drives (``None`` if it does not)."""
        active = self._studies.get(study_id)
        return None if active is None else active.counts

    def run(self) -> None:
        """The loop; returns after ``stop()``."""
        self._recorder.start()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("scheduler iteration failed; retrying")
                time.sleep(1.0)
            metrics.SCHEDULER_TICK.observe(time.monotonic() - started)
        try:
            self._shutdown(self._grace_s)
        except Exception:
            log.exception("scheduler shutdown failed")

    def tick(self) -> None:
        """One iteration of the loop (public for tests)."""
        if not self._hold_lease():
            time.sleep(IDLE_SLEEP_S)
            return
        now = time.monotonic()
        if now - self._last_sync >= SYNC_INTERVAL_S:
            self._sync_studies()
            self._last_sync = now
        self._apply_stop_requests()
        self._enforce_stops()
        self._collect(POLL_TIMEOUT_S)
        for active in self._studies.values():
            self._check_limits(active)
        self._dispatch()
        for active in list(self._studies.values()):
            self._mark_started(active)
            self._maybe_end(active)
        metrics.TRIALS_RUNNING.set(len(self._running))
        if not self._running:
            time.sleep(IDLE_SLEEP_S if not self._studies else POLL_TIMEOUT_S)

    # ----------------------------------------------------------------- lease

    def _hold_lease(self) -> bool:
        now = time.monotonic()
        if self.lease.held and now - self._last_lease < self._lease_every:
            return True
        was_held = self.lease.held
        try:
            held = self.lease.acquire_or_renew()
            self._last_lease_ok = now
        except Exception:
            log.warning("could not reach the database to renew the lease", exc_info=True)
            held = was_held and now - self._last_lease_ok < self.lease.ttl.total_seconds() * 0.8
        self._last_lease = now
        if held and not was_held:
            self._become_leader()
        elif was_held and not held:
            self._step_down()
        self.role = "leader" if held else "standby"
        metrics.SCHEDULER_LEADER.set(1 if held else 0)
        return held

    def _become_leader(self) -> None:
        log.info("this process now runs the scheduler (epoch %s)", self.lease.epoch)
        self._studies.clear()
        self._ended.clear()
        self._running.clear()
        self._last_sync = 0.0
        self._close_trials_of_ended_studies()

    def _close_trials_of_ended_studies(self) -> None:
        """Trials a previous scheduler left RUNNING or WAITING in a study that has ended
        since (cancelled while it was down, say) are failed: none stays "running" for good."""
        with self._sessions() as session:
            ended = [sid for sid, _ in repository.ended_study_ids(session)]
            unfinished = trial_queries.unfinished_trials_of(session, ended)
        for trial_id in unfinished:
            try:
                self._storage.set_trial_user_attr(trial_id, ATTR_STOP_REASON, "study ended")
                self._storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile
        if unfinished:
            log.info("closed %d trials left unfinished in ended studies", len(unfinished))

    def _step_down(self) -> None:
        log.warning("stepping down: stopping %d trials without recording them", len(self._running))
        for rt in self._running.values():
            self._executor.cancel(rt.handle)
        dropped = self._recorder.abandon()
        self._recorder = Recorder(self._storage)  # a fresh one for a later lease
        self._recorder.start()
        if dropped:
            log.warning("dropped %d unwritten writes; the new holder re-runs their trials", dropped)
        self._running.clear()
        for study_id in self._studies:
            self._ledger.close(study_id)
        self._studies.clear()

    # ----------------------------------------------------------------- studies

    def _sync_studies(self) -> None:
        if self._read_trial_limits is not None:
            self._trial_limits = self._read_trial_limits()
        with self._sessions() as session:
            records = repository.active_studies(session)
        current = {r.id: r for r in records}
        self._ended &= set(current)  # once written, an ended study leaves the records
        for study_id, active in list(self._studies.items()):
            record = current.get(study_id)
            if record is None:  # cancelled (or ended) outside the scheduler
                self._drain(active, "cancelled")
            else:
                active.status = record.status
                active.priority = record.priority
                active.max_concurrent = record.max_concurrent
        for record in records:
            if record.id not in self._studies and record.id not in self._ended:
                if record.optuna_study_id is None and not self._creation_overdue(record):
                    continue  # the API is still creating its Optuna study: next sync
                try:
                    self._studies[record.id] = self._load(record)
                except Exception as err:
                    log.exception("cannot load study %s", record.id)
                    self._fail_study_record(record.id, f"cannot start: {err}")
        metrics.STUDIES_ACTIVE.labels("queued").set(
            sum(1 for r in records if r.status == StudyStatus.QUEUED.value)
        )
        metrics.STUDIES_ACTIVE.labels("running").set(
            sum(1 for r in records if r.status == StudyStatus.RUNNING.value)
        )

    @staticmethod
    def _creation_overdue(record: Study) -> bool:
        """A study row is written before its Optuna study (``repository.create_study``);
        one still without it after ``CREATION_GRACE_S`` lost its creator, and is loaded
        (and so failed, "cannot start") rather than left queued for ever."""
        return utcnow() - record.created_at > timedelta(seconds=CREATION_GRACE_S)

    def _load(self, record: Study) -> ActiveStudy:
        """Take over a study: rebuild its sampler, count its trials, re-run its orphans.

        The stored spec is read as it was accepted (``StudySpec``): no plug-in is asked
        again, so a workload uninstalled since fails its trials, not this load."""
        spec = StudySpec.from_stored(record.spec)
        optuna_id = self._storage.get_study_id_from_name(record.name)
        trials = self._storage.get_all_trials(optuna_id, deepcopy=False)
        counts = Counts()
        for trial in trials:
            attrs = trial.user_attrs
            counts.add_trial(
                trial.state.name.lower(),
                retried=bool(attrs.get(ATTR_RETRIED)),
                raised=Counts.is_raised(attrs),
            )
        counts = self._ledger.open(record.id, counts)
        study = DrivenStudy(
            study_name=record.name,
            storage=self._storage,
            sampler=build_sampler(spec, len(trials)),
            pruner=build_pruner(spec),
            waiting=lambda: counts.waiting,
        )
        active = ActiveStudy(
            id=record.id,
            name=record.name,
            owner=record.owner,
            spec=spec,
            study=study,
            distributions=distributions_of(spec),
            status=record.status,
            started_at=record.started_at,
            priority=record.priority,
            max_concurrent=record.max_concurrent,
            created_at=record.created_at,
            counts=counts,
        )
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                self._recover_orphan(active, trial)
        return active

    def _recover_orphan(self, active: ActiveStudy, trial: FrozenTrial) -> None:
        """A trial left RUNNING by a scheduler that died: fail it and re-run its params."""
        attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 1))
        retry = attempt < self._max_attempts
        attrs: dict[str, object] = {ATTR_STOP_REASON: "orphaned"}
        if retry:
            attrs[ATTR_RETRIED] = True
        self._recorder.user_attrs(trial._trial_id, attrs)
        trial_id, storage = trial._trial_id, self._storage
        self._recorder.call(
            lambda: ignore(storage.set_trial_state_values(trial_id, TrialState.FAIL))
        )
        log.info("study %s: trial %d was orphaned by a restart", active.name, trial.number)
        self._ledger.ended(active.id, trial.number, "retried" if retry else "failed")
        if retry:
            user_attrs = {
                ATTR_ATTEMPT: attempt + 1,
                ATTR_RETRY_OF: trial.number,
                lineages.ATTR_LINEAGE: lineages.lineage_of(trial.user_attrs, trial.number),
            }
            if ATTR_PREEMPTIONS in trial.user_attrs:
                user_attrs[ATTR_PREEMPTIONS] = trial.user_attrs[ATTR_PREEMPTIONS]
            self._requeue(active, trial.number, dict(trial.params), user_attrs, "orphaned")
        else:
            metrics.TRIALS_FINISHED.labels("fail").inc()
