"""The service survives losing Ray: trials lost with it run again, no study fails or sticks.

Team mode: the Ray head is killed in the middle of a study and started again on the same
port; the service says 503 naming Ray meanwhile, joins the new head, and the study ends with
exactly ``n_trials`` complete. The embedded default: the raylet of the service's own local
Ray is killed, and the service starts a new local Ray. Each test has a Ray of its own, since
killing the session's cluster would break the tests sharing it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.support.processes import wait_until
from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, submit, synthetic, wait_for

pytestmark = pytest.mark.ray

SLOW = {"steps": 20, "sleep_s": 0.1}
N_TRIALS = 6


@pytest.fixture
def own_cluster(artifacts_dir: Path) -> Iterator[RayCluster]:
    """A one-node Ray of this test's own (2 CPUs)."""
    cluster = RayCluster.start(artifacts_dir / "ray-loss", head_cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


def _ray_problem(api: httpx.Client) -> bool:
    answer = api.get("/healthz")
    problems = answer.json()["problems"]
    return answer.status_code == 503 and any(p.startswith("ray:") for p in problems)


def _healthy(api: httpx.Client) -> bool:
    return api.get("/healthz").status_code == 200


def _started_running(api: httpx.Client, study_id: int) -> None:
    wait_for(api, study_id, lambda s: s["counts"]["complete"] >= 1, 120, "a complete trial")
    wait_until(
        lambda: any(t["node"] for t in all_trials(api, study_id, state="running")),
        60,
        0.2,
        "a trial running on a node",
    )


def _assert_all_ran_once(api: httpx.Client, study_id: int, storage: str, name: str) -> None:
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


def test_the_service_rejoins_a_restarted_ray_head(
    own_cluster: RayCluster, tmp_path: Path, artifacts_dir: Path, unique_name: str
) -> None:
    url = f"sqlite:///{tmp_path / 'loss.db'}"
    env = dict(own_cluster.env, RAY_ADDRESS=own_cluster.address)
    service = ServiceProcess.start(url, env, artifacts_dir / "service-ray-head-lost.log")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            body = synthetic(unique_name, n_trials=N_TRIALS, max_concurrent=2, fixed=SLOW)
            study = submit(api, **body)
            _started_running(api, study["id"])
            own_cluster.kill_head()
            wait_until(lambda: _ray_problem(api), 30, 0.5, "/healthz to name Ray")
            assert api.get(f"/api/v1/studies/{study['id']}").json()["status"] == "running"
            own_cluster.start_head()  # the same port, a new cluster
            wait_until(lambda: _healthy(api), 120, 0.5, "the service to rejoin Ray")
            _assert_all_ran_once(api, study["id"], url, unique_name)
        assert service.proc is not None
        assert service.proc.poll() is None, "the service stayed up"
    finally:
        service.stop()


def _local_ray(service: ServiceProcess, name: str) -> psutil.Process:
    assert service.proc is not None
    for proc in psutil.Process(service.proc.pid).children(recursive=True):
        if proc.name() == name:
            return proc
    raise AssertionError(f"no {name} under the service")


def test_the_embedded_default_restarts_its_local_ray(
    tmp_path: Path, artifacts_dir: Path, unique_name: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ADAMP_TUNE_"))}
    env.update(ADAMP_TUNE_RAY_NUM_CPUS="2", RAY_USAGE_STATS_ENABLED="0")
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    service = ServiceProcess.start(url, env, artifacts_dir / "service-embedded-ray-lost.log")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            body = synthetic(unique_name, n_trials=N_TRIALS, max_concurrent=2, fixed=SLOW)
            study = submit(api, **body)
            _started_running(api, study["id"])
            raylet = _local_ray(service, "raylet")
            os.kill(raylet.pid, signal.SIGKILL)
            wait_until(lambda: _ray_problem(api), 30, 0.5, "/healthz to name Ray")
            wait_until(lambda: _healthy(api), 120, 0.5, "a new local Ray")
            assert _local_ray(service, "raylet").pid != raylet.pid
            _assert_all_ran_once(api, study["id"], url, unique_name)
    finally:
        service.stop()
