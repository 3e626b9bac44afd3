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
   and which lower-priority trials to preempt, and do it;
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
    ATTR_ERROR,
    ATTR_PREEMPTIONS,
    ATTR_RETRIED,
    ATTR_RETRY_OF,
    ATTR_STOP_REASON,
)
from service.scheduler.ending import StudyEnds
from service.scheduler.lease import Lease
from service.scheduler.ledger import Counts, Ledger
from service.scheduler.outcomes import ignore
from service.scheduler.policy import Demand, Holder, Snapshot, decide
from service.scheduler.recorder import Recorder
from service.scheduler.tracking import ActiveStudy, RunningTrial
from service.study_spec import StudySpec
from workers.messages import TrialRequest

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 0.05
IDLE_SLEEP_S = 0.2
CREATION_GRACE_S = 60.0
"""How long a new study's row may wait for its Optuna study before the scheduler gives up."""


class Scheduler(StudyEnds):
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
        study = optuna.load_study(
            study_name=record.name,
            storage=self._storage,
            sampler=build_sampler(spec, len(trials)),
            pruner=build_pruner(spec),
        )
        counts = Counts()
        for trial in trials:
            attrs = trial.user_attrs
            counts.add_trial(
                trial.state.name.lower(),
                retried=bool(attrs.get(ATTR_RETRIED)),
                raised=Counts.is_raised(attrs),
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
            counts=self._ledger.open(record.id, counts),
        )
        orphans = [t for t in trials if t.state == TrialState.RUNNING]
        for trial in orphans:
            self._recover_orphan(active, trial)
        if orphans:
            self._recorder.flush()
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

    # ----------------------------------------------------------------- dispatch

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
        """Start what the policy says, and ask the trials it names to make room."""
        if self._stop.is_set():
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
        if active.counts.waiting:
            self._recorder.flush()  # the re-runs' enqueue must be written before the ask
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
