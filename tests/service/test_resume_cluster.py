"""Resume on the real cluster: a worker SIGKILLed in the middle of an epoch, and the whole
service killed mid-trial. Each time the re-run starts at the killed epoch (from the
checkpoint of the one before), reports each epoch once, and ends with the value of an
uninterrupted run of the same configuration and seed, run alongside for comparison."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.studies import submit, synthetic, wait_for

pytestmark = pytest.mark.ray

STEPS = 8
EPOCH = {"steps": STEPS, "sleep_s": 0.5, "noise": 0.3}
"""A deterministic multi-epoch trial: seeded noise, so the resumed curve must continue the
generator's state exactly to match."""


def _study(name: str) -> dict[str, Any]:
    return synthetic(name, n_trials=1, max_concurrent=1, seed=11, fixed=EPOCH)


def _in_epoch(api: httpx.Client, study_id: int, epoch: int) -> dict[str, Any]:
    """The running trial once it has reported the epochs before ``epoch``: it is then in
    the middle of ``epoch`` (each epoch lasts ``sleep_s``)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        page = api.get(f"/api/v1/studies/{study_id}/trials", params={"state": "running"}).json()
        for trial in page["items"]:
            if len(trial["intermediate_values"]) >= epoch and trial["node"]:
                assert len(trial["intermediate_values"]) == epoch, "polled too slowly"
                return trial
        time.sleep(0.05)
    raise AssertionError(f"no trial reached epoch {epoch}")


def _assert_resumed_like(storage: str, name: str, reference: str, epoch: int) -> None:
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    (whole,) = optuna.load_study(study_name=reference, storage=storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 1
    rerun = complete[0]
    assert rerun.user_attrs["resumed_from"] == epoch - 1, "it started at the killed epoch"
    assert sorted(rerun.intermediate_values) == list(range(STEPS)), "one report per epoch"
    assert rerun.intermediate_values == whole.intermediate_values
    assert rerun.value == whole.value
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_worker_killed_mid_epoch_resumes_at_that_epoch(
    sqlite_service: ServiceProcess, sqlite_api: httpx.Client, unique_name: str
) -> None:
    epoch = 3
    reference = submit(sqlite_api, **_study(f"{unique_name}-whole"))
    study = submit(sqlite_api, **_study(unique_name))
    victim = _in_epoch(sqlite_api, study["id"], epoch)
    os.kill(victim["node"]["pid"], signal.SIGKILL)
    for sid in (study["id"], reference["id"]):
        assert wait_for(sqlite_api, sid, timeout_s=120)["status"] == "completed"
    _assert_resumed_like(sqlite_service.database_url, unique_name, f"{unique_name}-whole", epoch)


def test_a_trial_resumes_after_the_service_is_killed_and_restarted(
    ray_cluster: RayCluster, tmp_path: Path, artifacts_dir: Path, unique_name: str
) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    env = dict(ray_cluster.env, RAY_ADDRESS=ray_cluster.address)
    service = ServiceProcess.start(
        url, env, artifacts_dir / "service-resume.log", scheduler_lease_s="3"
    )
    epoch = 4
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            reference = submit(api, **_study(f"{unique_name}-whole"))
            assert wait_for(api, reference["id"], timeout_s=120)["status"] == "completed"
            study = submit(api, **_study(unique_name))
            _in_epoch(api, study["id"], epoch)
        started = time.monotonic()
        service.kill()
        service.launch()
        restarted = time.monotonic()
        with httpx.Client(base_url=service.url, timeout=30) as api:
            assert wait_for(api, study["id"], timeout_s=120)["status"] == "completed"
        print(f"restart {restarted - started:.1f}s, then {time.monotonic() - restarted:.1f}s")
        _assert_resumed_like(url, unique_name, f"{unique_name}-whole", epoch)
    finally:
        service.stop()
