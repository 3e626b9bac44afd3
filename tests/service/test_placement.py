"""GPU placement on a real multi-node Ray cluster.

The session's cluster has a head node with 2 CPUs and no GPU, and a worker node that
declares 2 GPUs (this machine has none: Ray schedules by declared resources and sets
``CUDA_VISIBLE_DEVICES`` for each task, which is what a trial would use on a real GPU).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, submit, synthetic, wait_for

pytestmark = pytest.mark.ray


def _gpu_node(api) -> str:
    nodes = api.get("/api/v1/cluster").json()["nodes"]
    return next(n["node_id"] for n in nodes if n["alive"] and n["gpus_total"] == 2)


def _certainly_running(trial: dict) -> tuple[datetime, datetime]:
    """When the trial was certainly running: its training (``duration_s``, timed by the
    worker) lies somewhere between the service's ask and tell, which lag the worker, so it
    covers at least ``[told - duration, asked + duration]``. The service's own window would
    show a trial on a GPU after the worker released it, before the scheduler's next tick
    recorded it."""
    asked = datetime.fromisoformat(trial["datetime_start"])
    told = datetime.fromisoformat(trial["datetime_complete"])
    duration = timedelta(seconds=trial["duration_s"])
    return told - duration, asked + duration


def _overlapping_pairs(trials: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of trials that certainly ran at the same time."""
    spans = [_certainly_running(t) for t in trials]
    return [
        (trials[i], trials[j])
        for i in range(len(trials))
        for j in range(i + 1, len(trials))
        if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]
    ]


def _peak(trials: list[dict], spans: list[tuple[Any, Any]] | None = None) -> int:
    """Most trials running at once, over the service's windows or over given ``spans``."""
    if spans is None:
        spans = [(t["datetime_start"], t["datetime_complete"]) for t in trials]
    edges = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def test_one_gpu_trials_run_on_the_gpu_node_two_at_a_time(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            n_trials=4,
            max_concurrent=4,
            resources={"gpus": 1, "cpus": 1},
            # 4 s each: long enough that two overlap even when a loaded machine is slow to
            # start Ray's workers (1 s trials once ran one after the other).
            fixed={"steps": 20, "sleep_s": 0.2},
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=180)
    assert done["status"] == "completed"
    trials = all_trials(sqlite_api, study["id"])
    gpu_node = _gpu_node(sqlite_api)
    assert {t["node"]["node_id"] for t in trials} == {gpu_node}
    for t in trials:
        assert len(t["gpu_ids"]) == 1
        assert t["cuda_visible_devices"] == t["gpu_ids"][0]
        assert t["device"] == "cpu", "no CUDA on this machine: the trial trained on the CPU"
    certain = [_certainly_running(t) for t in trials]
    assert _peak(trials, certain) == 2, "two GPUs: two trials at once, never more"
    for a, b in _overlapping_pairs(trials):
        assert a["cuda_visible_devices"] != b["cuda_visible_devices"], "each its own GPU"


def test_fractional_gpus_pack_trials_onto_one_gpu(sqlite_api, unique_name: str) -> None:
    study = submit(
        sqlite_api,
        **synthetic(
            unique_name,
            n_trials=4,
            max_concurrent=4,
            resources={"gpus": 0.5, "cpus": 0.5},
            fixed={"steps": 10, "sleep_s": 0.15},
        ),
    )
    done = wait_for(sqlite_api, study["id"], timeout_s=120)
    assert done["status"] == "completed"
    trials = all_trials(sqlite_api, study["id"])
    assert {t["node"]["node_id"] for t in trials} == {_gpu_node(sqlite_api)}
    assert _peak(trials) == 4, "half a GPU each: four trials share the two GPUs"
    per_gpu: dict[str, int] = {}
    for t in trials:
        per_gpu[t["cuda_visible_devices"]] = per_gpu.get(t["cuda_visible_devices"], 0) + 1
    assert sorted(per_gpu.values()) == [2, 2]


def test_a_higher_priority_study_preempts_gpu_trials_which_resume(
    ray_cluster, artifacts_dir, unique_name: str
) -> None:
    """The two declared GPUs are held by a low-priority study's one-GPU trials; a
    higher-priority study submitted afterwards has its trial running within seconds, when
    a low trial stops at its next report (reports every 0.3 s; a low trial lasts 6 s);
    every low-priority configuration still completes, the preempted one re-run with the
    same parameters, one clean curve, and the study's events say so."""
    env = dict(ray_cluster.env, RAY_ADDRESS=ray_cluster.address)
    service = ServiceProcess.start(
        f"sqlite:///{artifacts_dir / 'preempt.db'}",
        env,
        artifacts_dir / "service-preempt.log",
    )
    gpu = {"gpus": 1, "cpus": 0.5}
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            low = submit(
                api,
                **synthetic(
                    f"{unique_name}-low",
                    n_trials=2,
                    priority=-5,
                    resources=gpu,
                    fixed={"steps": 20, "sleep_s": 0.3},
                ),
            )
            wait_for(api, low["id"], lambda s: s["counts"]["running"] == 2, 60, "2 GPU trials")
            submitted = datetime.now(UTC)
            high = submit(
                api,
                **synthetic(f"{unique_name}-high", n_trials=1, resources=gpu, fixed={"steps": 1}),
            )
            done = wait_for(api, high["id"], timeout_s=60)
            low_done = wait_for(api, low["id"], timeout_s=120)
            (first,) = all_trials(api, high["id"])
            lows = all_trials(api, low["id"])
            events = api.get(f"/api/v1/studies/{low['id']}/events").json()
    finally:
        service.stop()
    assert done["status"] == low_done["status"] == "completed"
    started = datetime.fromisoformat(first["datetime_start"])
    waited = (started if started.tzinfo else started.replace(tzinfo=UTC)) - submitted
    assert waited < timedelta(seconds=5), f"the high-priority trial waited {waited}"
    assert sum(t["state"] == "complete" for t in lows) == 2
    (preempted,) = [t for t in lows if t["stop_reason"] == "preempted"]
    assert len(preempted["intermediate_values"]) < 20, "it stopped at a report"
    (rerun,) = [t for t in lows if t["retry_of"] == preempted["number"]]
    assert rerun["state"] == "complete"
    assert rerun["params"] == preempted["params"]
    assert [iv["step"] for iv in rerun["intermediate_values"]] == list(range(20))
    assert [e["kind"] for e in events].count("trial_preempted") == 1
