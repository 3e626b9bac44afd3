"""How studies end: pruned trials, cancel, timeout, failing workloads, every sampler.

These use the cheap ``synthetic`` workload on the real service and Ray cluster (SQLite; the
PostgreSQL path is covered by the end-to-end test and the scheduler's database tests).
"""

from __future__ import annotations

import time

import pytest

from tests.support.studies import all_trials, get_study, submit, synthetic, wait_for

pytestmark = pytest.mark.ray


def test_median_pruner_stops_unpromising_trials(sqlite_api, unique_name: str) -> None:
    steps = 8
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            n_trials=12,
            max_concurrent=2,
            pruner="median",
            sampler="random",
            search_space={"lr": {"low": 1e-5, "high": 1e-1, "log": True}},
            fixed={"steps": steps, "sleep_s": 0.05},
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=120)
    assert done["status"] == "completed"
    counts = done["counts"]
    assert counts["pruned"] >= 1, counts
    assert counts["complete"] + counts["pruned"] == 12
    pruned = all_trials(sqlite_api, study["id"], state="pruned")
    assert len(pruned) == counts["pruned"]
    for t in pruned:
        assert t["stop_reason"] == "pruned"
        assert len(t["intermediate_values"]) < steps, "a pruned trial stops early"
    # A pruned trial's curve is worse than the best complete trial's at the step it stopped.
    best = min(all_trials(sqlite_api, study["id"], state="complete"), key=lambda t: t["value"])
    curve = {iv["step"]: iv["value"] for iv in best["intermediate_values"]}
    for t in pruned:
        last = t["intermediate_values"][-1]
        assert last["value"] > curve[last["step"]]


def test_cancel_stops_running_trials_and_starts_no_more(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name, n_trials=6, max_concurrent=2, fixed={"steps": 200, "sleep_s": 0.1}
        ),
    )
    wait_for(
        sqlite_api, study["id"], lambda s: s["counts"]["running"] == 2, 60, "two running trials"
    )
    answer = sqlite_api.post(f"/api/v1/studies/{study['id']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled"
    cancelled_at = time.monotonic()
    stopped = wait_for(
        sqlite_api, study["id"], lambda s: s["counts"]["running"] == 0, 30, "trials to stop"
    )
    assert time.monotonic() - cancelled_at < 15, "running trials stop within seconds"
    assert stopped["status"] == "cancelled"
    assert stopped["stop_reason"] == "cancelled"
    time.sleep(1.5)  # a few scheduler iterations: nothing new may start
    after = get_study(sqlite_api, study["id"])
    assert after["counts"]["running"] == 0
    assert after["counts"]["waiting"] == 0
    trials = all_trials(sqlite_api, study["id"])
    assert len(trials) == 2
    assert all(t["state"] == "fail" and t["stop_reason"] == "cancelled" for t in trials)
    # Cancelling again is refused, and the results stay.
    again = sqlite_api.post(f"/api/v1/studies/{study['id']}/cancel")
    assert again.status_code == 409
    assert len(all_trials(sqlite_api, study["id"])) == 2


def test_cancel_stops_trials_that_never_report(sqlite_api, unique_name: str) -> None:
    """Trials stuck in one hour-long step ignore a polite stop: they are killed within a few
    seconds, and the scheduler meanwhile keeps serving another study (a stuck trial once
    held the scheduler's loop for as long as it slept)."""
    busy = submit(
        sqlite_api,
        **synthetic(f"{unique_name}-busy", n_trials=500, max_concurrent=1, fixed={"steps": 1}),
    )
    stuck = submit(
        sqlite_api,
        **synthetic(unique_name, n_trials=2, max_concurrent=2, fixed={"steps": 1, "sleep_s": 3600}),
    )
    wait_for(sqlite_api, stuck["id"], lambda s: s["counts"]["running"] == 2, 60, "2 stuck trials")
    assert sqlite_api.post(f"/api/v1/studies/{stuck['id']}/cancel").status_code == 200
    cancelled_at = time.monotonic()
    stopped = wait_for(
        sqlite_api, stuck["id"], lambda s: s["counts"]["running"] == 0, 60, "the kill"
    )
    assert time.monotonic() - cancelled_at < 20, "killed after a 5 s grace, not after an hour"
    assert stopped["counts"]["fail"] == 2
    before = get_study(sqlite_api, busy["id"])["counts"]["complete"]
    wait_for(
        sqlite_api,
        busy["id"],
        lambda s: s["counts"]["complete"] >= before + 3,
        60,
        "the other study to go on",
    )
    sqlite_api.post(f"/api/v1/studies/{busy['id']}/cancel")


def test_timeout_ends_a_study(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            n_trials=50,
            max_concurrent=2,
            timeout_s=3,
            fixed={"steps": 100, "sleep_s": 0.1},
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=60)
    assert done["status"] == "completed"
    assert done["stop_reason"] == "timeout"
    assert done["counts"]["running"] == 0
    assert 3 <= done["elapsed_s"] < 20
    stopped = all_trials(sqlite_api, study["id"], state="fail")
    assert stopped
    assert all(t["stop_reason"] == "timeout" for t in stopped)


def test_a_workload_that_always_raises_fails_the_study(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api, **synthetic(unique_name, n_trials=10, fixed={"steps": 2, "fail_rate": 1.0})
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=60)
    assert done["status"] == "failed"
    assert "synthetic failure" in done["error"]
    trials = all_trials(sqlite_api, study["id"])
    assert all(t["state"] == "fail" for t in trials)
    raised = [t for t in trials if t["error"] and "SyntheticFailure" in t["error"]]
    assert len(raised) >= 3
    # Any other trial was one still running when the study gave up, stopped for that reason.
    assert all(t["stop_reason"] == "failed" for t in trials if t not in raised)
    assert all(t["attempts"] == 1 for t in trials), "the workload's own errors are not retried"
    assert len(trials) <= 4, "a study whose every trial fails stops after three failures"


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_every_sampler_completes_a_study(sqlite_api, unique_name: str, sampler: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            sampler=sampler,
            n_trials=5,
            search_space={
                "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                "delta": {"low": 0.01, "high": 1.0, "log": True},
                "wd_ratio": {"low": 0.0, "high": 1.0},
            },
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=120)
    assert done["status"] == "completed", done
    assert done["counts"]["complete"] == 5
    params = [tuple(t["params"].values()) for t in all_trials(sqlite_api, study["id"])]
    assert len(set(params)) == 5, "each trial tries a new configuration"


def test_grid_sampler_visits_every_point_once(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            sampler="grid",
            n_trials=100,
            search_space={
                "lr": {"choices": [1e-3, 3e-3, 1e-2]},
                "wd_ratio": {"low": 0.0, "high": 0.5, "step": 0.25},
            },
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=120)
    assert done["status"] == "completed"
    assert done["stop_reason"] == "grid exhausted"
    points = {
        (t["params"]["lr"], t["params"]["wd_ratio"]) for t in all_trials(sqlite_api, study["id"])
    }
    assert points == {(lr, wd) for lr in (1e-3, 3e-3, 1e-2) for wd in (0.0, 0.25, 0.5)}
    assert done["counts"]["complete"] == 9
