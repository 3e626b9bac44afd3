"""The scheduler's bookkeeping without a cluster: trials in threads, a real database.

Crashes, restarts and a second scheduler are played out here deterministically; the tests
with real Ray processes (tests/service/test_faults.py) show the same through the service.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from db.models import Study
from service import repository
from service.cluster.threads import ThreadCluster
from service.scheduler import Scheduler
from tests.support.scheduling import FlakyExecutor, submit_study, trials_of, wait_status


def _die(scheduler: Scheduler) -> None:
    """Stop a scheduler as a killed process would: nothing recorded, the lease left to expire."""
    scheduler._shutdown = lambda grace_s: None  # type: ignore[method-assign]
    scheduler._recorder.abandon()  # its writes die with it
    scheduler.stop(grace_s=0)


def test_crashed_trials_are_rerun_and_the_study_still_ends_with_n_trials(parts) -> None:
    sessions, storage = parts
    study = submit_study(sessions, storage, "crashy")
    executor = FlakyExecutor(crash={0, 1})  # the two first configurations, run side by side
    scheduler = Scheduler(sessions, storage, executor, max_trial_attempts=3)
    scheduler.start()
    try:
        done = wait_status(sessions, study.id, ("completed", "failed"))
    finally:
        scheduler.stop()
    assert done.status == "completed"
    trials = trials_of(storage, "crashy")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 6
    assert {t.number for t in failed} == {executor.submitted[i].trial_number for i in (0, 1)}
    assert all(
        t.user_attrs["retried"] and t.user_attrs["stop_reason"] == "worker died" for t in failed
    )
    reruns = {t.user_attrs["retry_of"]: t for t in complete if "retry_of" in t.user_attrs}
    assert set(reruns) == {t.number for t in failed}
    for number, rerun in reruns.items():
        original = next(t for t in failed if t.number == number)
        assert rerun.params == original.params, "a re-run tries the same configuration"
        assert rerun.user_attrs["attempt"] == 2
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_retries_are_bounded(parts) -> None:
    sessions, storage = parts
    study = submit_study(sessions, storage, "always-crashes", n_trials=2, max_concurrent=1)
    executor = FlakyExecutor(crash_all=True)
    scheduler = Scheduler(sessions, storage, executor, max_trial_attempts=2)
    scheduler.start()
    try:
        done = wait_status(sessions, study.id, ("completed", "failed"))
    finally:
        scheduler.stop()
    trials = trials_of(storage, "always-crashes")
    assert all(t.state == TrialState.FAIL for t in trials)
    # Two configurations, each run at most twice: four trials, two of them final failures.
    assert len(trials) == 4
    assert sum(1 for t in trials if not t.user_attrs.get("retried")) == 2
    assert done.status == "completed", "crashes are the cluster's fault, not the study's"


def test_a_restarted_scheduler_reruns_orphans_and_counts_nothing_twice(parts) -> None:
    sessions, storage = parts
    study = submit_study(
        sessions, storage, "orphans", n_trials=5, fixed={"steps": 50, "sleep_s": 0.02}
    )
    first = Scheduler(sessions, storage, ThreadCluster(cpus=2), lease_s=2)
    first.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = [t for t in trials_of(storage, "orphans") if t.state == TrialState.RUNNING]
        if len(running) == 2:
            break
        time.sleep(0.05)
    _die(first)
    orphaned = {t.number for t in trials_of(storage, "orphans") if t.state == TrialState.RUNNING}
    assert len(orphaned) == 2

    second = Scheduler(sessions, storage, ThreadCluster(cpus=2), lease_s=2)
    second.start()
    try:
        done = wait_status(sessions, study.id, ("completed", "failed"), timeout_s=60)
    finally:
        second.stop()
    assert done.status == "completed"
    trials = trials_of(storage, "orphans")
    assert sum(1 for t in trials if t.state == TrialState.COMPLETE) == 5
    for number in orphaned:
        orphan = next(t for t in trials if t.number == number)
        assert orphan.state == TrialState.FAIL
        assert orphan.user_attrs["stop_reason"] == "orphaned"
        assert any(t.user_attrs.get("retry_of") == number for t in trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_only_one_of_two_schedulers_runs_trials(parts) -> None:
    sessions, storage = parts
    study = submit_study(sessions, storage, "two-schedulers", n_trials=6)
    a_exec, b_exec = FlakyExecutor(), FlakyExecutor()
    a = Scheduler(sessions, storage, a_exec, lease_s=3)
    b = Scheduler(sessions, storage, b_exec, lease_s=3)
    a.start()
    b.start()
    try:
        wait_status(sessions, study.id, ("completed",))
    finally:
        a.stop()
        b.stop()
    assert {a.role, b.role} <= {"off", "standby", "leader"}
    assert (len(a_exec.submitted) == 0) != (len(b_exec.submitted) == 0), "exactly one dispatched"
    assert len(a_exec.submitted) + len(b_exec.submitted) == 6


def test_the_standby_takes_over_when_the_leader_stops(parts) -> None:
    sessions, storage = parts
    study = submit_study(
        sessions,
        storage,
        "takeover",
        n_trials=8,
        max_concurrent=1,
        fixed={"steps": 5, "sleep_s": 0.05},
    )
    a_exec, b_exec = FlakyExecutor(), FlakyExecutor()
    a = Scheduler(sessions, storage, a_exec, lease_s=2)
    a.start()
    while not a_exec.submitted:
        time.sleep(0.05)
    b = Scheduler(sessions, storage, b_exec, lease_s=2)
    b.start()
    time.sleep(0.5)
    assert b.role == "standby"
    a.stop()  # graceful: its running trial is failed and enqueued to re-run
    try:
        done = wait_status(sessions, study.id, ("completed",), timeout_s=60)
    finally:
        b.stop()
    assert done.status == "completed"
    assert a_exec.submitted
    assert b_exec.submitted
    trials = trials_of(storage, "takeover")
    assert sum(1 for t in trials if t.state == TrialState.COMPLETE) == 8
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_graceful_stop_leaves_nothing_running_and_resumes_later(parts) -> None:
    sessions, storage = parts
    study = submit_study(
        sessions, storage, "graceful", n_trials=4, fixed={"steps": 100, "sleep_s": 0.02}
    )
    first = Scheduler(sessions, storage, ThreadCluster(cpus=2))
    first.start()
    while sum(1 for t in trials_of(storage, "graceful") if t.state == TrialState.RUNNING) < 2:
        time.sleep(0.05)
    first.stop(grace_s=10)
    trials = trials_of(storage, "graceful")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("stop_reason") == "shutdown"]
    assert len(stopped) == 2
    assert sum(1 for t in trials if t.state == TrialState.WAITING) == 2, "enqueued to re-run"

    second = Scheduler(sessions, storage, ThreadCluster(cpus=2))
    second.start()
    try:
        done = wait_status(sessions, study.id, ("completed",), timeout_s=60)
    finally:
        second.stop()
    trials = trials_of(storage, "graceful")
    assert sum(1 for t in trials if t.state == TrialState.COMPLETE) == 4
    assert done.stop_reason == "n_trials"


def test_higher_priority_is_served_first(parts) -> None:
    sessions, storage = parts
    slow = {"steps": 4, "sleep_s": 0.03}
    executor = FlakyExecutor(cpus=2)  # two slots: the studies compete for them
    low = submit_study(
        sessions, storage, "low", owner="ann", n_trials=12, max_concurrent=2, fixed=slow
    )
    scheduler = Scheduler(sessions, storage, executor)
    scheduler.start()
    try:
        while len(executor.submitted) < 2:
            time.sleep(0.02)
        high = submit_study(
            sessions,
            storage,
            "high",
            owner="ann",
            n_trials=4,
            max_concurrent=2,
            priority=10,
            fixed=slow,
        )
        wait_status(sessions, high.id, ("completed",))
        wait_status(sessions, low.id, ("completed",), timeout_s=60)
    finally:
        scheduler.stop()
    order = [r.study_id for r in executor.submitted]
    first_high = order.index(high.id)
    # Once the high-priority study arrived, it took every slot that freed up until its 4
    # trials had started; the low-priority study waited.
    assert order[first_high : first_high + 4] == [high.id] * 4


def test_a_trial_that_ignores_its_stop_is_recorded_stopped_after_the_grace(
    parts, monkeypatch
) -> None:
    """A workload that never reports (here: one 6 s step) cannot be stopped politely; the
    scheduler kills it after ``STOP_GRACE_S`` and, past twice that, counts it stopped, so
    a cancel frees its slot within seconds whatever the workload does."""
    sessions, storage = parts
    monkeypatch.setattr("service.scheduler.outcomes.STOP_GRACE_S", 0.5)
    forced: list[bool] = []

    class Recording(ThreadCluster):
        def cancel(self, handle: Any, *, force: bool = False) -> None:
            forced.append(force)
            super().cancel(handle, force=force)

    study = submit_study(
        sessions, storage, "stuck", n_trials=2, max_concurrent=2, fixed={"steps": 1, "sleep_s": 6}
    )
    scheduler = Scheduler(sessions, storage, Recording(cpus=2))
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while len(trials_of(storage, "stuck")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        repository.cancel_study(sessions, study.id, by="tester")
        scheduler.request_stop(study.id)
        asked = time.monotonic()
        while any(t.state == TrialState.RUNNING for t in trials_of(storage, "stuck")):
            assert time.monotonic() - asked < 4, "stopped after twice the grace, not the step"
            time.sleep(0.05)
    finally:
        scheduler.stop(grace_s=1)
    assert forced.count(False) == 2
    assert forced.count(True) == 2, "each was killed after the grace"
    trials = trials_of(storage, "stuck")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert {t.user_attrs["stop_reason"] for t in trials} == {"cancelled"}
    # The threads (which no executor can kill) end with their step: none outlives the test.
    deadline = time.monotonic() + 15
    while [t for t in threading.enumerate() if t.name.startswith("trial-")]:
        assert time.monotonic() < deadline, "the stuck trial threads did not end"
        time.sleep(0.1)


def test_trials_of_a_study_that_ended_while_no_scheduler_ran_are_closed(parts) -> None:
    """A study cancelled while its trials ran, and no scheduler saw it (the service was
    down): the next scheduler fails those trials instead of leaving them running."""
    sessions, storage = parts
    study = submit_study(sessions, storage, "ended-while-down", n_trials=3)
    loaded = optuna.load_study(study_name="ended-while-down", storage=storage)
    left = [loaded.ask(), loaded.ask()]
    loaded.enqueue_trial({"lr": 0.01})
    repository.cancel_study(sessions, study.id, by="tester")
    scheduler = Scheduler(sessions, storage, ThreadCluster(cpus=2))
    scheduler.tick()
    trials = trials_of(storage, "ended-while-down")
    assert len(trials) == 3
    assert all(t.state == TrialState.FAIL for t in trials), [t.state for t in trials]
    assert {t.number for t in trials} >= {t.number for t in left}
    assert {t.user_attrs.get("stop_reason") for t in trials} == {"study ended"}


def test_a_study_is_not_taken_before_its_optuna_study_exists(parts, monkeypatch) -> None:
    """The API writes the study's row, then creates its Optuna study: a scheduler syncing in
    between must wait for it, not fail the study ("Record does not exist"), as it once did
    to a study submitted in a running service. A row whose Optuna study never comes (its
    creator died) is failed after the grace period, not left queued."""
    sessions, storage = parts
    created: list[Study] = []
    real_create = optuna.create_study
    scheduler = Scheduler(sessions, storage, ThreadCluster(cpus=2))

    def create_after_a_sync(*args: Any, **kwargs: Any) -> optuna.Study:
        with sessions() as session:
            created.extend(repository.active_studies(session))
        scheduler._sync_studies()  # the row is there, its Optuna study not yet
        return real_create(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", create_after_a_sync)
    study = submit_study(sessions, storage, "row-first")
    assert [s.optuna_study_id for s in created] == [None]
    with sessions() as session:
        assert repository.get_study(session, study.id).status == "queued"
    scheduler.start()
    try:
        assert wait_status(sessions, study.id, ("completed", "failed")).status == "completed"
    finally:
        scheduler.stop()

    monkeypatch.setattr(optuna, "create_study", real_create)
    monkeypatch.setattr("service.scheduler.core.CREATION_GRACE_S", 0.0)
    with sessions.begin() as session:
        orphan = Study(
            **{
                **_row_of(created[0]),
                "name": "orphan-row",
                "name_key": "orphan-row",
                "optuna_study_id": None,
            }
        )
        session.add(orphan)
    with sessions() as session:
        orphan_id = repository.active_studies(session)[0].id
    later = Scheduler(sessions, storage, ThreadCluster(cpus=2))
    later._sync_studies()
    with sessions() as session:
        failed = repository.get_study(session, orphan_id)
    assert failed.status == "failed"
    assert "cannot start" in (failed.error or "")


def _row_of(study: Study) -> dict[str, Any]:
    """The columns of a study row a new row can copy (not its id or timestamps)."""
    skip = {"id", "created_at", "started_at", "finished_at", "status", "error"}
    return {c.name: getattr(study, c.name) for c in Study.__table__.columns if c.name not in skip}
