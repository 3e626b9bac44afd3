"""The scheduler's queue without a cluster: its counts (the ledger) against the database
and the API, nothing started while the cluster is lost, the stored spec, and preemption.
"""

from __future__ import annotations

import time
from typing import Any

from optuna.trial import TrialState

from db.models import Study
from service import repository, trial_queries
from service.api.cluster import queue_of
from service.api.views import study_out
from service.cluster import Connection
from service.cluster.threads import ThreadCluster
from service.scheduler import Scheduler
from service.scheduler.ledger import Counts, counts_of
from service.study_spec import StudySpec
from tests.support.scheduling import FlakyExecutor, submit_study, trials_of, wait_status
from workers.messages import TrialRequest

# --------------------------------------------------------------------------- the ledger


def test_the_scheduler_the_api_and_the_cluster_view_count_alike(parts) -> None:
    """Tick by tick, with every write flushed, the scheduler's ledger equals what the API
    reads from the database (``ledger_rows``), retried crashes included; and the queue of
    ``/api/v1/cluster`` says the study has trials to start exactly while the ledger does."""
    sessions, storage = parts
    executor = FlakyExecutor(crash={0, 1, 3}, cpus=2)
    study = submit_study(sessions, storage, "ledger", n_trials=5, fixed={"steps": 1})
    scheduler = Scheduler(sessions, storage, executor, max_trial_attempts=3)
    seen_retried = 0
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the study did not end"
        scheduler.tick()
        scheduler._recorder.flush()
        live = scheduler.counts(study.id)
        with sessions() as session:
            stored = counts_of(trial_queries.ledger_rows(session, study.optuna_study_id))
            running, queued = queue_of(session)
        if live is None:  # the study ended
            break
        assert live == stored
        assert running == live.running
        assert bool(queued.get("tester")) == (live.to_start(5) > 0)
        seen_retried = max(seen_retried, live.retried)
    assert seen_retried == 3
    assert stored == Counts(finished=5, succeeded=5, retried=3)
    with sessions() as session:
        out = study_out(session, repository.get_study(session, study.id))
    assert (out.counts.finished, out.counts.retried, out.counts.fail) == (5, 3, 3)


class LosableCluster(ThreadCluster):
    """A thread cluster whose connection can be lost, as a lost Ray's is while the service
    joins it again."""

    def __init__(self) -> None:
        super().__init__(cpus=4)
        self.connected = True
        self.submitted = 0

    def connection(self) -> Connection:
        return Connection(self.connected, None if self.connected else "ray: lost; reconnecting")

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        self.submitted += 1
        return super().submit(request, cpus=cpus, gpus=gpus)


def test_nothing_starts_while_the_cluster_is_lost(parts) -> None:
    """A lost cluster would refuse every trial, each then failed and re-run: the scheduler
    asks Optuna for none until the cluster is back, then the study runs as usual."""
    sessions, storage = parts
    cluster = LosableCluster()
    cluster.connected = False
    study = submit_study(sessions, storage, "lost", n_trials=2, fixed={"steps": 1})
    scheduler = Scheduler(sessions, storage, cluster)
    for _ in range(5):
        scheduler.tick()
    scheduler._recorder.flush()
    assert cluster.submitted == 0
    assert trials_of(storage, "lost") == [], "no trial was asked for, none failed"
    cluster.connected = True
    deadline = time.monotonic() + 60
    while scheduler.counts(study.id) is not None:
        assert time.monotonic() < deadline, "the study did not end"
        scheduler.tick()
    scheduler._recorder.flush()
    assert cluster.submitted == 2
    assert [t.state for t in trials_of(storage, "lost")] == [TrialState.COMPLETE] * 2


# --------------------------------------------------------------------------- stored spec


def test_a_missing_workload_fails_its_own_trials_not_the_queue(parts) -> None:
    """A study whose workload was uninstalled after submission still loads (its stored
    spec is not checked against today's plug-ins): its trials fail with a message naming
    the workload, the study fails, and another study in the queue completes."""
    sessions, storage = parts
    gone = submit_study(sessions, storage, "gone", n_trials=3, max_concurrent=1)
    fine = submit_study(sessions, storage, "fine", n_trials=3)
    with sessions.begin() as session:
        row = session.get(Study, gone.id)
        assert row is not None
        row.spec = {**row.spec, "workload": "uninstalled-plugin"}
    scheduler = Scheduler(sessions, storage, ThreadCluster(cpus=2))
    scheduler.start()
    try:
        assert wait_status(sessions, fine.id, ("completed", "failed")).status == "completed"
        failed = wait_status(sessions, gone.id, ("completed", "failed"))
    finally:
        scheduler.stop()
    assert failed.status == "failed"
    assert "uninstalled-plugin" in (failed.error or "")
    errors = {t.user_attrs.get("error", "") for t in trials_of(storage, "gone")}
    assert all("uninstalled-plugin" in e for e in errors), errors


def test_patch_updates_the_stored_spec(parts) -> None:
    sessions, storage = parts
    study = submit_study(sessions, storage, "patched", priority=0, max_concurrent=1)
    repository.update_study(sessions, study.id, {"priority": 7, "max_concurrent": 3}, by="t")
    with sessions() as session:
        row = repository.get_study(session, study.id)
    spec = StudySpec.from_stored(row.spec)
    assert (row.priority, row.max_concurrent) == (7, 3)
    assert (spec.priority, spec.max_concurrent) == (7, 3)
    assert row.spec["version"] == 1


# --------------------------------------------------------------------------- preemption


def test_a_higher_priority_study_preempts_and_the_preempted_trials_resume(parts) -> None:
    """Two GPUs held by a low-priority study's trials; a high-priority GPU study arrives:
    a low trial is stopped at its next report and re-queued with the same parameters
    (``retry_of``, ``preemptions``; not a failed attempt), the high study's trial starts
    in its place, and every low-priority configuration still completes."""
    sessions, storage = parts
    # Long enough (3 s) that a loaded machine still sees the low trials running when the
    # high study arrives (0.8 s once let both end first: nothing to preempt).
    steps = {"steps": 30, "sleep_s": 0.1}
    gpu = {"gpus": 1, "cpus": 1}
    low = submit_study(
        sessions, storage, "low-gpu", n_trials=2, max_concurrent=2, resources=gpu, fixed=steps
    )
    executor = FlakyExecutor(cpus=8)
    executor._gpus = 2
    scheduler = Scheduler(
        sessions, storage, executor, max_preemptions=1, preempt_non_checkpointing=True
    )
    scheduler.start()
    try:
        while len(executor.submitted) < 2:
            time.sleep(0.02)
        high = submit_study(
            sessions, storage, "high-gpu", n_trials=1, priority=5, resources=gpu, fixed={"steps": 1}
        )
        wait_status(sessions, high.id, ("completed",))
        wait_status(sessions, low.id, ("completed",), timeout_s=60)
    finally:
        scheduler.stop()
    order = [r.study_id for r in executor.submitted]
    assert order[:3] == [low.id, low.id, high.id], "the high trial started before any low one ended"
    lows = trials_of(storage, "low-gpu")
    preempted = [t for t in lows if t.user_attrs.get("stop_reason") == "preempted"]
    assert len(preempted) == 1
    (rerun,) = [t for t in lows if t.user_attrs.get("retry_of") == preempted[0].number]
    assert rerun.params == preempted[0].params
    assert rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["preemptions"] == 1
    assert rerun.user_attrs["attempt"] == 1, "a preemption is not a failed attempt"
    assert sum(t.state == TrialState.COMPLETE for t in lows) == 2
    with sessions() as session:
        kinds = [e.kind for e in repository.get_study(session, low.id).events]
    assert kinds.count("trial_preempted") == 1
