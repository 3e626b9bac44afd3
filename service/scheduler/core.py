"""The scheduler loop: queued studies -> Optuna ask -> trials on the cluster -> Optuna tell.

One process at a time holds the scheduler lease (``lease.py``) and runs this loop in a
thread of its own; every write to Optuna's tables goes through it, so SQLite sees a single
writer. Each iteration:

1. renews the lease (a newly acquired lease first fails the orphans of the last holder:
   trials left RUNNING are marked FAIL and re-run with the same parameters);
2. re-reads the queued and running studies (a cancel from the API shows up here);
3. takes the next outcome of each running trial: a report goes to Optuna and may prune the
   trial, a result is told to Optuna, a crashed worker gets its trial re-run (up to
   ``max_trial_attempts`` runs of one configuration), an exception of the workload fails
   the trial for good;
4. starts trials while studies have room (``max_concurrent``, ``n_trials``) and the
   cluster has free CPUs and GPUs: higher priority first, then users in turn, within each
   user's ``max_gpus_per_user`` and limit of trials in flight;
5. ends studies: ``n_trials`` finished (complete, pruned, or failed for good), the grid
   exhausted, ``timeout_s`` passed, or every trial failing.

A trial slot is used by each trial that ended for good and each trial running or waiting
to be re-run; a failed trial that was re-run frees its slot for the re-run (user attribute
``retried``), so a study ends with exactly ``n_trials`` finished trials, never counting a
configuration twice.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session, sessionmaker

from db.models import Study, StudyStatus, utcnow
from service import metrics, repository, trial_queries
from service.checkpoints import lineage as lineages
from service.cluster import Cluster, Crashed, Ended, Event, Outcome, Raised
from service.optuna_glue import build_pruner, build_sampler, distributions_of, split_params
from service.scheduler.lease import Lease
from service.schemas import StudyCreate
from workers.checkpoints import CheckpointStoreError
from workers.messages import Finished, Report, Resumed, Started, TrialRequest

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
"""A trial asked to stop (cancel, timeout, pruning, shutdown) that has not stopped after
this long has its worker killed; after twice this long it is recorded as stopped anyway,
so its CPUs and GPUs count as free whatever its node does."""
SYNC_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 0.05
IDLE_SLEEP_S = 0.2
CREATION_GRACE_S = 60.0
"""How long a new study's row may wait for its Optuna study before the scheduler gives up."""
FAIL_STUDY_AFTER = 3
"""A study whose first this-many finished trials all raised is marked failed."""

# Trial user attributes (visible in optuna-dashboard too).
ATTR_ATTEMPT = "attempt"
ATTR_RETRY_OF = "retry_of"
ATTR_RETRIED = "retried"
ATTR_PLACEMENT = "placement"
ATTR_STOP_REASON = "stop_reason"
ATTR_ERROR = "error"
ATTR_SIF = "scale_invariant_fraction"
ATTR_DURATION = "duration_s"


@dataclass
class RunningTrial:
    """A trial on the cluster, as the scheduler tracks it."""

    study_id: int
    trial: optuna.Trial
    handle: Any
    request: TrialRequest
    attempt: int
    cpus: float
    gpus: float
    stop_reason: str | None = None
    last_sif: float | None = None
    pending: Outcome | None = None
    """An outcome taken from the cluster and not yet recorded (database unreachable)."""
    stop_asked: float | None = None
    """When it was asked to stop (monotonic), for the forced stop after ``STOP_GRACE_S``."""
    forced: bool = False
    told: bool = False
    requeued: bool = False
    started: float = field(default_factory=time.monotonic)


@dataclass
class ActiveStudy:
    """A queued or running study this scheduler drives, with its trial bookkeeping."""

    id: int
    name: str
    owner: str
    request: StudyCreate
    study: optuna.Study
    distributions: dict[str, Any]
    status: str
    started_at: datetime | None
    priority: int
    max_concurrent: int
    created_at: datetime
    finished: int = 0
    """Trials that ended for good: complete, pruned, or failed without a re-run."""
    succeeded: int = 0
    raised: int = 0
    waiting: int = 0
    """Re-runs enqueued in Optuna and not started yet."""
    running: set[int] = field(default_factory=set)
    """Trial numbers running now."""
    draining: str | None = None
    """Why no more trials start (``timeout``, ``cancelled``, ``failed``, ``shutdown``)."""
    last_error: str | None = None

    @property
    def used_slots(self) -> int:
        return self.finished + len(self.running) + self.waiting

    @property
    def target(self) -> int:
        """Trials to finish: ``n_trials``, or fewer when a grid has fewer points (a grid
        point is never asked for twice, even while another trial still runs it)."""
        grid = self.request.grid_size
        return self.request.n_trials if grid is None else min(grid, self.request.n_trials)

    @property
    def timed_out(self) -> bool:
        timeout = self.request.timeout_s
        return (
            timeout is not None
            and self.started_at is not None
            and utcnow() >= self.started_at + timedelta(seconds=timeout)
        )


class Scheduler:
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
        checkpoint_url: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._checkpoint_url = checkpoint_url
        # One cache layer for every read and write of Optuna's tables in this process.
        self._storage = optuna.storages.get_storage(storage)
        self._executor = executor
        self._max_attempts = max_trial_attempts
        self._max_gpus_per_user = max_gpus_per_user
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
        self._running: dict[int, RunningTrial] = {}  # id(handle) -> trial
        self._stop = threading.Event()
        self._stop_requests: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._node_cache: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at, cpus, gpus
        self.role = "starting"

    # ----------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Run the loop in a background thread."""
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
        """CPUs of the cluster's live nodes, as the executor last saw them (never blocks on
        a cluster that is down)."""
        return sum(n.cpus for n in self._executor.nodes())

    def request_stop(self, study_id: int) -> None:
        """Stop a cancelled study's trials at the loop's next step (any thread may call it).

        The loop also finds the cancel in the database at its next sync; this only makes
        it act at once, between two trial starts of a busy iteration too.
        """
        self._stop_requests.put(study_id)

    def run(self) -> None:
        """The loop; returns after ``stop()``."""
        self._grace_s = 20.0
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

    # ----------------------------------------------------------------- one iteration

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
        self._running.clear()
        self._studies.clear()

    # ----------------------------------------------------------------- studies

    def _sync_studies(self) -> None:
        if self._read_trial_limits is not None:
            self._trial_limits = self._read_trial_limits()
        with self._sessions() as session:
            records = repository.active_studies(session)
        current = {r.id: r for r in records}
        for study_id, active in list(self._studies.items()):
            record = current.get(study_id)
            if record is None:  # cancelled (or ended) outside the scheduler
                self._drain(active, "cancelled")
            else:
                active.status = record.status
                active.priority = record.priority
                active.max_concurrent = record.max_concurrent
        for record in records:
            if record.id not in self._studies:
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
        """Take over a study: rebuild its sampler, count its trials, re-run its orphans."""
        request = StudyCreate.model_validate(record.spec)
        optuna_id = self._storage.get_study_id_from_name(record.name)
        trials = self._storage.get_all_trials(optuna_id, deepcopy=False)
        study = optuna.load_study(
            study_name=record.name,
            storage=self._storage,
            sampler=build_sampler(request, len(trials)),
            pruner=build_pruner(request),
        )
        active = ActiveStudy(
            id=record.id,
            name=record.name,
            owner=record.owner,
            request=request,
            study=study,
            distributions=distributions_of(request),
            status=record.status,
            started_at=record.started_at,
            priority=record.priority,
            max_concurrent=record.max_concurrent,
            created_at=record.created_at,
        )
        for trial in trials:
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                active.finished += 1
                active.succeeded += 1
            elif trial.state == TrialState.FAIL and not trial.user_attrs.get(ATTR_RETRIED):
                active.finished += 1
                if trial.user_attrs.get(ATTR_ERROR) and not trial.user_attrs.get(ATTR_STOP_REASON):
                    active.raised += 1
            elif trial.state == TrialState.WAITING:
                active.waiting += 1
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                self._recover_orphan(active, trial)
        return active

    def _recover_orphan(self, active: ActiveStudy, trial: FrozenTrial) -> None:
        """A trial left RUNNING by a scheduler that died: fail it and re-run its params."""
        attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 1))
        retry = attempt < self._max_attempts
        self._storage.set_trial_user_attr(trial._trial_id, ATTR_STOP_REASON, "orphaned")
        if retry:
            self._storage.set_trial_user_attr(trial._trial_id, ATTR_RETRIED, True)
        self._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.info("study %s: trial %d was orphaned by a restart", active.name, trial.number)
        if retry:
            lineage = lineages.lineage_of(trial.user_attrs, trial.number)
            self._enqueue_rerun(active, trial.number, trial.params, attempt, "orphaned", lineage)
        else:
            active.finished += 1
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

    def _wants_trial(self, active: ActiveStudy) -> bool:
        if active.draining or active.status not in (
            StudyStatus.QUEUED.value,
            StudyStatus.RUNNING.value,
        ):
            return False
        if len(active.running) >= active.max_concurrent:
            return False
        return active.waiting > 0 or active.used_slots < active.target

    def _dispatch(self) -> None:
        """Start trials while the cluster has room, fairly.

        Higher priority first. Within a priority, free slots go to users in turn, the user
        served longest ago first, so one user's large study cannot starve another's small
        one. Among one user's studies, the one with the fewest trials left to finish takes
        the slot (the oldest on a tie): short studies finish first, as shortest-remaining-
        first minimises the mean time a user waits for results. A user's running trials
        never hold more than ``max_gpus_per_user`` GPUs.
        """
        if self._stop.is_set():
            return
        free_cpus, free_gpus = self._capacity()
        gpus_by_user: dict[str, float] = {}
        trials_by_user: dict[str, int] = {}
        for rt in self._running.values():
            owner = self._studies[rt.study_id].owner if rt.study_id in self._studies else ""
            gpus_by_user[owner] = gpus_by_user.get(owner, 0.0) + rt.gpus
            trials_by_user[owner] = trials_by_user.get(owner, 0) + 1
        tiers: dict[int, dict[str, list[ActiveStudy]]] = {}
        for active in sorted(
            self._studies.values(),
            key=lambda a: (a.target - a.finished, a.created_at, a.id),
        ):
            tiers.setdefault(active.priority, {}).setdefault(active.owner, []).append(active)
        for priority in sorted(tiers, reverse=True):
            by_user = tiers[priority]
            progress = True
            while progress:
                progress = False
                for owner in sorted(by_user, key=lambda u: self._served.get(u, 0)):
                    for active in by_user[owner]:
                        res = active.request.resources
                        if not self._wants_trial(active):
                            continue
                        if res.cpus > free_cpus + 1e-9 or res.gpus > free_gpus + 1e-9:
                            continue
                        if not self._within_user_limit(gpus_by_user.get(owner, 0.0), res.gpus):
                            continue
                        if not self._may_run_another(owner, trials_by_user.get(owner, 0)):
                            continue
                        if self._start_trial(active):
                            free_cpus -= res.cpus
                            free_gpus -= res.gpus
                            gpus_by_user[owner] = gpus_by_user.get(owner, 0.0) + res.gpus
                            trials_by_user[owner] = trials_by_user.get(owner, 0) + 1
                            self._serves += 1
                            self._served[owner] = self._serves
                            progress = True
                            self._apply_stop_requests()  # a cancel acts mid-dispatch too
                            break

    def _may_run_another(self, owner: str, running: int) -> bool:
        """Whether ``owner``'s trials in flight stay within their limit with one more."""
        limits = self._trial_limits
        limit = limits[owner] if owner in limits else limits.get("")
        return limit is None or running < limit

    def _within_user_limit(self, held: float, wanted: float) -> bool:
        limit = self._max_gpus_per_user
        return not wanted or limit is None or held + wanted <= limit + 1e-9

    def _start_trial(self, active: ActiveStudy) -> bool:
        trial = active.study.ask(fixed_distributions=active.distributions)
        attrs = trial.user_attrs
        attempt = int(attrs.get(ATTR_ATTEMPT, 1))
        if ATTR_RETRY_OF in attrs:
            active.waiting = max(0, active.waiting - 1)
        knobs, args = split_params(active.request, trial.params)
        seed_base = active.request.seed if active.request.seed is not None else active.id * 7919
        lineage = lineages.lineage_of(attrs, trial.number)  # re-runs: the first attempt's
        request = TrialRequest(
            study_id=active.id,
            trial_number=trial.number,
            workload=active.request.workload,
            optimizer=active.request.optimizer,
            knobs=knobs,
            args=args,
            seed=(seed_base * 1_000_003 + lineage) % (2**31),
            num_cpus=active.request.resources.cpus,
            checkpoint_url=self._checkpoint_url,
            lineage=lineage,
        )
        res = active.request.resources
        try:
            handle = self._executor.submit(request, cpus=res.cpus, gpus=res.gpus)
        except Exception as err:
            log.exception("could not submit trial %d of %s", trial.number, active.name)
            rt = RunningTrial(active.id, trial, None, request, attempt, 0.0, 0.0)
            self._close(
                rt,
                active,
                TrialState.FAIL,
                {ATTR_ERROR: f"submit: {err}"},
                retry_reason="submit failed",
            )
            return False
        self._running[id(handle)] = RunningTrial(
            active.id, trial, handle, request, attempt, res.cpus, res.gpus
        )
        active.running.add(trial.number)
        return True

    def _mark_started(self, active: ActiveStudy) -> None:
        """A queued study with a trial on the cluster becomes running."""
        if active.status != StudyStatus.QUEUED.value or not active.running:
            return
        now = utcnow()
        if repository.transition(
            self._sessions,
            active.id,
            StudyStatus.RUNNING,
            event="started",
            message="first trial started",
            from_statuses=(StudyStatus.QUEUED.value,),
            started_at=now,
        ):
            active.status, active.started_at = StudyStatus.RUNNING.value, now

    # ----------------------------------------------------------------- outcomes

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
        """Apply ``rt.pending``; on a database error it stays pending for the next tick.

        Every step is safe to repeat: user attributes are written before ``tell`` (Optuna
        refuses them on a finished trial), ``tell`` happens once (``rt.told``) and the
        re-run is enqueued once (``rt.requeued``).
        """
        outcome = rt.pending
        if outcome is None:
            return
        try:
            self._on_outcome(rt, outcome)
        except Exception:
            log.warning(
                "recording an outcome of trial %d failed; will retry",
                rt.trial.number,
                exc_info=True,
            )
            return
        rt.pending = None

    def _on_outcome(self, rt: RunningTrial, outcome: Outcome) -> None:
        active = self._studies.get(rt.study_id)
        match outcome:
            case Event(event=Started(placement=p, device=device)):
                self._storage.set_trial_user_attr(
                    rt.trial._trial_id,
                    ATTR_PLACEMENT,
                    {
                        "node_id": p.node_id,
                        "node_ip": p.node_ip,
                        "hostname": p.hostname,
                        "pid": p.pid,
                        "gpu_ids": list(p.gpu_ids),
                        "cuda_visible_devices": p.cuda_visible_devices,
                        "device": device,
                    },
                )
            case Event(event=Resumed(step=step)):
                lineages.carry_over(self._storage, rt.trial, step)
            case Event(event=Report() as report):
                rt.last_sif = report.scale_invariant_fraction
                if rt.stop_reason is not None:
                    return
                rt.trial.report(report.value, report.step)
                if active is not None and rt.trial.should_prune():
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
                    retry = reason if reason == "shutdown" else None
                    self._close(rt, active, TrialState.FAIL, attrs, retry_reason=retry)
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
        """Record how a trial ended, re-run it if it died through no fault of its own."""
        retry = (
            retry_reason is not None
            and active is not None
            and active.draining in (None, "shutdown")
            and rt.attempt < self._max_attempts
        )
        if not rt.told:
            if retry:
                attrs = {**attrs, ATTR_RETRIED: True}
            try:
                for key, val in attrs.items():
                    self._storage.set_trial_user_attr(rt.trial._trial_id, key, val)
                if state == TrialState.COMPLETE:
                    rt.trial.study.tell(rt.trial, value)
                else:
                    rt.trial.study.tell(rt.trial, state=state)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # an earlier try got as far as finishing it
            rt.told = True
        if retry and active is not None and retry_reason is not None and not rt.requeued:
            lineage = rt.request.lineage if rt.request.lineage is not None else rt.trial.number
            self._enqueue_rerun(
                active, rt.trial.number, rt.trial.params, rt.attempt, retry_reason, lineage
            )
            rt.requeued = True
        self._forget(rt, active)
        if retry:
            return
        metrics.TRIALS_FINISHED.labels(state.name.lower()).inc()
        if active is None:
            return
        active.finished += 1
        if state in (TrialState.COMPLETE, TrialState.PRUNED):
            active.succeeded += 1
        elif raised is not None:
            active.raised += 1
            active.last_error = raised
        elif retry_reason is not None:
            self._event(
                active,
                "trial_failed",
                f"trial {rt.trial.number} failed {rt.attempt} times ({retry_reason}); not re-run",
                {"trial": rt.trial.number},
            )

    def _enqueue_rerun(
        self,
        active: ActiveStudy,
        number: int,
        params: dict[str, Any],
        attempt: int,
        reason: str,
        lineage: int | None = None,
    ) -> None:
        if lineage is None:  # the first attempt's number: the re-run resumes its checkpoint
            lineage = lineages.trial_lineage(self._storage, active.study._study_id, number)
        active.study.enqueue_trial(
            params,
            user_attrs={
                ATTR_ATTEMPT: attempt + 1,
                ATTR_RETRY_OF: number,
                lineages.ATTR_LINEAGE: lineage,
            },
            skip_if_exists=False,
        )
        active.waiting += 1
        metrics.TRIALS_RETRIED.labels(reason).inc()
        self._event(
            active, "trial_retried", f"trial {number} re-run after: {reason}", {"trial": number}
        )

    def _forget(self, rt: RunningTrial, active: ActiveStudy | None) -> None:
        self._running.pop(id(rt.handle), None)
        if active is not None:
            active.running.discard(rt.trial.number)

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
        for rt in list(self._running.values()):
            if rt.stop_asked is None or rt.pending is not None:
                continue
            waited = now - rt.stop_asked
            if waited > 2 * STOP_GRACE_S:
                log.warning("trial %d did not stop; recorded as stopped", rt.trial.number)
                rt.pending = Ended()
                self._process(rt)
            elif waited > STOP_GRACE_S and not rt.forced:
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

    def _fail_waiting(self, active: ActiveStudy, reason: str) -> None:
        """Enqueued re-runs that will never start are failed, so none stays waiting."""
        if active.waiting == 0:
            return
        optuna_id = active.study._study_id
        for trial in self._storage.get_all_trials(
            optuna_id, deepcopy=False, states=(TrialState.WAITING,)
        ):
            self._storage.set_trial_user_attr(trial._trial_id, ATTR_STOP_REASON, reason)
            self._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            active.finished += 1
        active.waiting = 0

    def _check_limits(self, active: ActiveStudy) -> None:
        """Drain a study past its ``timeout_s``, or one whose every trial so far raised."""
        if active.draining is not None:
            return
        if active.timed_out:
            self._drain(active, "timeout")
        elif (
            active.raised >= min(active.request.n_trials, FAIL_STUDY_AFTER) and not active.succeeded
        ):
            self._drain(active, "failed")

    def _maybe_end(self, active: ActiveStudy) -> None:
        request = active.request
        self._check_limits(active)
        if active.running:
            return
        sampler = active.study.sampler
        exhausted = (
            isinstance(sampler, optuna.samplers.GridSampler)
            and active.waiting == 0
            and sampler.is_exhausted(active.study)
        )
        if active.draining == "shutdown":
            return
        if active.draining in ("cancelled", "timeout", "failed"):
            self._fail_waiting(active, active.draining)
        elif not ((active.finished >= request.n_trials and active.waiting == 0) or exhausted):
            return
        self._studies.pop(active.id, None)
        if active.draining == "cancelled":
            return  # the API already recorded it
        if active.draining == "failed":
            repository.transition(
                self._sessions,
                active.id,
                StudyStatus.FAILED,
                event="failed",
                message=f"every trial failed; last error: {active.last_error}",
                stop_reason="failed",
                error=active.last_error,
                finished_at=utcnow(),
            )
            return
        exhausted = active.target < request.n_trials
        reason = active.draining or ("grid exhausted" if exhausted else "n_trials")
        repository.transition(
            self._sessions,
            active.id,
            StudyStatus.COMPLETED,
            event="completed",
            message=f"completed ({reason}) with {active.finished} finished trials",
            stop_reason=reason,
            finished_at=utcnow(),
        )

    def _fail_study_record(self, study_id: int, error: str) -> None:
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
        self.lease.release()
        self.role = "off"
        metrics.SCHEDULER_LEADER.set(0)
        log.info("scheduler stopped")

    # ----------------------------------------------------------------- helpers

    def _event(
        self, active: ActiveStudy, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        with self._sessions.begin() as session:
            repository.add_event(session, active.id, kind, message, data)


def elapsed_seconds(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` (or now), for the API's timings."""
    if start is None:
        return None
    seconds = ((end or utcnow()) - start).total_seconds()
    return seconds if math.isfinite(seconds) else None
