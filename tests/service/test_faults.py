"""Nothing lost, nothing stuck: real processes killed in the middle of studies.

Each test checks the two promises: the study ends with exactly ``n_trials`` complete
trials (no finished trial lost, none counted twice), and no trial is left running or
waiting.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

from tests.support.postgres import fresh_database
from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, get_study, submit, synthetic, wait_for

pytestmark = pytest.mark.ray

LEASE = {"scheduler_lease_s": "3"}
SLOW = {"steps": 30, "sleep_s": 0.05}


def _service(cluster: RayCluster, url: str, log: Path) -> ServiceProcess:
    env = dict(cluster.env, RAY_ADDRESS=cluster.address)
    return ServiceProcess.start(url, env, log, **LEASE)


def _assert_clean_finish(
    storage_url: str, name: str, n_trials: int
) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=storage_url).get_trials()
    assert sum(1 for t in trials if t.state == TrialState.COMPLETE) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    configs = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(configs)) == n_trials, "no configuration was counted twice"
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("retried"):
            assert any(r.user_attrs.get("retry_of") == t.number for r in trials)
    return trials


def _running(api: httpx.Client, study_id: int, count: int) -> list[dict]:
    def ready(s: dict) -> bool:
        return s["counts"]["running"] >= count

    wait_for(api, study_id, ready, 60, f"{count} running trials")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = all_trials(api, study_id, state="running")
        if len(running) >= count and all(t["node"] for t in running):
            return running
        time.sleep(0.1)
    raise AssertionError("running trials never reported where they run")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_a_killed_worker_is_rerun(
    sqlite_service: ServiceProcess, sqlite_api, unique_name: str
) -> None:
    study = submit(sqlite_api, **synthetic(unique_name, n_trials=4, max_concurrent=2, fixed=SLOW))
    victim = _running(sqlite_api, study["id"], 1)[0]
    os.kill(victim["node"]["pid"], signal.SIGKILL)
    done = wait_for(sqlite_api, study["id"], timeout_s=120)
    assert done["status"] == "completed"
    assert done["counts"]["complete"] == 4
    trials = _assert_clean_finish(sqlite_service.database_url, unique_name, 4)
    killed = next(t for t in trials if t.number == victim["number"])
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["stop_reason"] == "worker died"
    rerun = next(t for t in trials if t.user_attrs.get("retry_of") == victim["number"])
    assert rerun.params == killed.params
    assert rerun.user_attrs["attempt"] == 2
    detail = sqlite_api.get(f"/api/v1/studies/{study['id']}/trials/{rerun.number}").json()
    assert detail["attempts"] == 2
    assert detail["retry_of"] == victim["number"]


@pytest.mark.postgres
def test_a_killed_service_resumes_after_restart(
    ray_cluster: RayCluster, pg_url: str, artifacts_dir: Path, unique_name: str
) -> None:
    service = _service(ray_cluster, pg_url, artifacts_dir / "service-killed.log")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            study = submit(api, **synthetic(unique_name, n_trials=6, max_concurrent=2, fixed=SLOW))
            wait_for(
                api, study["id"], lambda s: s["counts"]["complete"] >= 1, 60, "a complete trial"
            )
            orphans = {t["number"] for t in _running(api, study["id"], 1)}
        service.kill()
        service.launch()  # the same database, a new process
        with httpx.Client(base_url=service.url, timeout=30) as api:
            done = wait_for(api, study["id"], timeout_s=180)
        assert done["status"] == "completed"
        trials = _assert_clean_finish(pg_url, unique_name, 6)
        by_number = {t.number: t for t in trials}
        failed = {t.number for t in trials if t.user_attrs.get("stop_reason") == "orphaned"}
        assert failed, "the kill left running trials, which the new process failed"
        # A trial seen running just before the kill may still have finished before it (its
        # result then stands); every other one was failed as orphaned and run again.
        for number in orphans:
            assert number in failed or by_number[number].state == TrialState.COMPLETE, number
        for number in failed:
            assert by_number[number].state == TrialState.FAIL
            reruns = [t for t in trials if t.user_attrs.get("retry_of") == number]
            assert reruns, f"orphaned trial {number} was run again"
            assert reruns[0].params == by_number[number].params
    finally:
        service.stop()


def test_a_service_killed_mid_burst_loses_nothing_it_showed(
    ray_cluster: RayCluster, tmp_path: Path, artifacts_dir: Path, unique_name: str
) -> None:
    """Writes are queued off the loop (``service/scheduler/recorder.py``): SIGKILL the
    service while short trials finish many a second. Every trial the API showed complete
    before the kill is still complete with the same value; every complete trial has the
    attributes written before its tell (write-ahead order); the rest are re-run."""
    url = f"sqlite:///{tmp_path / 'burst.db'}"
    service = _service(ray_cluster, url, artifacts_dir / "service-burst.log")
    burst = {"steps": 1, "sleep_s": 0.05}
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            # Killed after 8 of 20: trials finish and are written while it dies, and 12 or so
            # are left for the restart (40 took another 30 s to finish, to no more effect).
            body = synthetic(unique_name, n_trials=20, max_concurrent=4, fixed=burst)
            study = submit(api, **body)
            wait_for(
                api, study["id"], lambda s: s["counts"]["complete"] >= 8, 120, "8 complete trials"
            )
            shown = {
                t["number"]: t["value"] for t in all_trials(api, study["id"], state="complete")
            }
        service.kill()
        service.launch()
        with httpx.Client(base_url=service.url, timeout=30) as api:
            done = wait_for(api, study["id"], timeout_s=240)
        assert done["status"] == "completed"
        trials = _assert_clean_finish(url, unique_name, 20)
        by_number = {t.number: t for t in trials}
        for number, value in shown.items():
            assert by_number[number].state == TrialState.COMPLETE, number
            assert by_number[number].value == value
        for t in trials:
            if t.state == TrialState.COMPLETE:
                assert "duration_s" in t.user_attrs, t.number
                assert "placement" in t.user_attrs, t.number
    finally:
        service.stop()


def _restart_postgres(url: str) -> str:
    """Restart the PostgreSQL server if this machine manages it, else drop every connection."""
    if shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir():
        version = sorted(os.listdir("/etc/postgresql"))[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return "restarted"
    # A server we do not manage: what clients see of a restart is every connection dropped.
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 3
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            time.sleep(0.2)
    engine.dispose()
    return "connections dropped"


@pytest.mark.postgres
def test_the_service_rides_out_a_postgres_restart(
    ray_cluster: RayCluster, pg_url: str, artifacts_dir: Path, unique_name: str
) -> None:
    service = _service(ray_cluster, pg_url, artifacts_dir / "service-pg-restart.log")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            study = submit(api, **synthetic(unique_name, n_trials=6, max_concurrent=2, fixed=SLOW))
            _running(api, study["id"], 2)
            _restart_postgres(pg_url)
            done = wait_for(api, study["id"], timeout_s=180)
        assert done["status"] == "completed"
        _assert_clean_finish(pg_url, unique_name, 6)
        assert service.proc is not None
        assert service.proc.poll() is None, "the service stayed up"
    finally:
        service.stop()


@pytest.mark.postgres
def test_two_api_processes_run_one_scheduler_and_the_other_takes_over(
    ray_cluster: RayCluster, pg_url: str, artifacts_dir: Path, unique_name: str
) -> None:
    first = _service(ray_cluster, pg_url, artifacts_dir / "service-pair-1.log")
    second = _service(ray_cluster, pg_url, artifacts_dir / "service-pair-2.log")
    try:
        roles = {}
        for svc in (first, second):
            roles[svc.url] = httpx.get(f"{svc.url}/healthz").json()["scheduler"]
        assert sorted(roles.values()) == ["leader", "standby"], roles
        leader = first if roles[first.url] == "leader" else second
        standby = second if leader is first else first
        with httpx.Client(base_url=standby.url, timeout=30) as api:
            study = submit(api, **synthetic(unique_name, n_trials=6, max_concurrent=2, fixed=SLOW))
            _running(api, study["id"], 1)
            leader.kill()
            done = wait_for(api, study["id"], timeout_s=180)
            assert done["status"] == "completed"
            assert httpx.get(f"{standby.url}/healthz").json()["scheduler"] == "leader"
        _assert_clean_finish(pg_url, unique_name, 6)
    finally:
        first.stop()
        second.stop()


@pytest.mark.postgres
def test_sigterm_stops_cleanly_and_the_study_resumes(
    ray_cluster: RayCluster, pg_url: str, artifacts_dir: Path, unique_name: str
) -> None:
    service = _service(ray_cluster, pg_url, artifacts_dir / "service-sigterm.log")
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            study = submit(api, **synthetic(unique_name, n_trials=4, max_concurrent=2, fixed=SLOW))
            running = {t["number"] for t in _running(api, study["id"], 2)}
        started = time.monotonic()
        service.terminate(grace_s=60)
        assert time.monotonic() - started < 30
        trials = optuna.load_study(study_name=unique_name, storage=pg_url).get_trials()
        assert not [t for t in trials if t.state == TrialState.RUNNING], "nothing left running"
        stopped = {t.number for t in trials if t.user_attrs.get("stop_reason") == "shutdown"}
        assert running <= stopped
        assert sum(1 for t in trials if t.state == TrialState.WAITING) == len(stopped)

        service.launch()
        with httpx.Client(base_url=service.url, timeout=30) as api:
            done = wait_for(api, study["id"], timeout_s=180)
            assert get_study(api, study["id"])["status"] == "completed"
        assert done["counts"]["complete"] == 4
        _assert_clean_finish(pg_url, unique_name, 4)
    finally:
        service.stop()
