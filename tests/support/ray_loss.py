"""Losing Ray in the middle of a study, as the Ray-loss tests check it (team mode and the
embedded default): what the service says meanwhile, and that every trial ran exactly once."""

from __future__ import annotations

import time

import httpx
import optuna
from optuna.trial import TrialState

from tests.support.processes import wait_until
from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, wait_for

SLOW = {"steps": 20, "sleep_s": 0.1}
N_TRIALS = 6


def ray_problem(api: httpx.Client) -> bool:
    answer = api.get("/healthz")
    problems = answer.json()["problems"]
    return answer.status_code == 503 and any(p.startswith("ray:") for p in problems)


def healthy(api: httpx.Client) -> bool:
    return api.get("/healthz").status_code == 200


def started_running(api: httpx.Client, study_id: int) -> None:
    wait_for(api, study_id, lambda s: s["counts"]["complete"] >= 1, 120, "a complete trial")
    wait_until(
        lambda: any(t["node"] for t in all_trials(api, study_id, state="running")),
        60,
        0.2,
        "a trial running on a node",
    )


def assert_all_ran_once(api: httpx.Client, study_id: int, storage: str, name: str) -> None:
    done = wait_for(api, study_id, timeout_s=300)
    assert done["status"] == "completed", done
    assert done["counts"]["complete"] == N_TRIALS
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == N_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    lost = [t for t in trials if t.user_attrs.get("stop_reason") == "orphaned"]
    assert lost, "the trials running when Ray went were failed as orphaned"
    for trial in lost:
        assert trial.state == TrialState.FAIL
        rerun = next(t for t in trials if t.user_attrs.get("retry_of") == trial.number)
        assert rerun.params == trial.params, "re-run with the same parameters"
        assert rerun.user_attrs["attempt"] == trial.user_attrs.get("attempt", 1) + 1


def assert_stops_cleanly(service: ServiceProcess) -> None:
    """SIGTERM to a service that has joined Ray again still runs its graceful stop.

    Ray's C++ core used to take SIGTERM over when the service joined Ray from its
    supervisor thread: the signal then killed the service with a stack dump instead."""
    started = time.monotonic()
    service.terminate(grace_s=30)
    assert time.monotonic() - started < 25, "stopped within its grace"
    tail = service.log_tail(40)
    assert "Application shutdown complete" in tail, tail
    assert "SIGTERM received" not in tail, tail
