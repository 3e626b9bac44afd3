"""The embedded default, as ``make run`` starts it: no database URL, no Ray address, no setup.

SQLite under the data directory and a local Ray started in-process; SIGTERM stops it cleanly
with nothing left running, a restart finds everything where it was, and a local Ray that
dies is started again with its lost trials re-run.

The tests share one embedded service on one data directory: each stops it (or its Ray) its
own way and starts it again, and the restarted service is where the next test begins. Each
start of the embedded service starts a local Ray (7-20 s here), so sharing saves them.
The test that kills the local Ray comes last: the errors it provokes stay out of the log
that the earlier tests check for tracebacks.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.processes import wait_until
from tests.support.ray_loss import (
    N_TRIALS,
    SLOW,
    assert_all_ran_once,
    assert_stops_cleanly,
    healthy,
    ray_problem,
    started_running,
)
from tests.support.service_process import ServiceProcess, embedded_env
from tests.support.studies import all_trials, submit, synthetic, wait_for

pytestmark = pytest.mark.ray


def _embedded(tmp_path: Path, log: Path) -> ServiceProcess:
    """``adamp-tune serve`` with no configuration but a data dir and a 2-CPU local Ray."""
    env = embedded_env()
    env["ADAMP_TUNE_DATA_DIR"] = str(tmp_path / "data")
    env["ADAMP_TUNE_RAY_NUM_CPUS"] = "2"
    log.write_bytes(b"")
    service = ServiceProcess("", env, log)
    service.launch()
    return service


@pytest.fixture(scope="module")
def _shared(
    tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[tuple[ServiceProcess, Path]]:
    data_parent = tmp_path_factory.mktemp("embedded")
    service = _embedded(data_parent, artifacts_dir / "service-embedded.log")
    try:
        yield service, data_parent
    finally:
        service.stop()


@pytest.fixture
def embedded(_shared: tuple[ServiceProcess, Path]) -> tuple[ServiceProcess, Path]:
    """The module's embedded service, running (started again if a failed test left it
    stopped), and the folder holding its data directory."""
    service, data_parent = _shared
    if service.proc is None or service.proc.poll() is not None:
        service.stop()
        service.launch()
    return service, data_parent


def test_serve_with_no_configuration(embedded: tuple[ServiceProcess, Path]) -> None:
    service, data_parent = embedded
    with httpx.Client(base_url=service.url, timeout=30) as api:
        health = api.get("/healthz").json()
        assert health["status"] == "ok"
        assert health["scheduler"] == "leader"
        nodes = api.get("/api/v1/cluster").json()["nodes"]
        assert len(nodes) == 1, "a local Ray of its own, not the test cluster"
        study = submit(api, **synthetic("embedded", n_trials=3))
        assert wait_for(api, study["id"], timeout_s=120)["status"] == "completed"
    assert (data_parent / "data" / "adamp-tune.db").exists()
    assert service.proc is not None
    children = psutil.Process(service.proc.pid).children(recursive=True)
    assert children, "the local Ray runs under the service"
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why.
    assert service.terminate(grace_s=60) in (0, -15)
    tail = service.log_tail(20)
    assert "scheduler stopped" in tail
    assert "Application shutdown complete" in tail
    assert "Traceback" not in service.log_path.read_text()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"left behind: {[p.name() for p in alive]}"

    service.launch()  # a restart on the same data directory
    with httpx.Client(base_url=service.url, timeout=30) as api:
        again = api.get(f"/api/v1/studies/{study['id']}").json()
        assert again["status"] == "completed"
        assert len(all_trials(api, study["id"])) == 3


def test_sigterm_to_the_whole_process_group_stops_cleanly(
    embedded: tuple[ServiceProcess, Path],
) -> None:
    """What systemd (``KillMode=control-group``) and ``kill -- -PGID`` do: SIGTERM reaches
    the service and its local Ray's processes at once. The service still stops within its
    grace, records its running trials for re-run, leaves no Ray process behind, and a
    restart finishes the study with exactly ``n_trials``."""
    service, _ = embedded
    with httpx.Client(base_url=service.url, timeout=30) as api:
        body = synthetic("group", n_trials=4, max_concurrent=2, fixed={"steps": 15, "sleep_s": 0.2})
        study = submit(api, **body)
        wait_for(api, study["id"], lambda s: s["counts"]["running"] == 2, 90, "2 running")
    assert service.proc is not None
    pid = service.proc.pid
    group = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    started = time.monotonic()
    os.killpg(os.getpgid(pid), signal.SIGTERM)
    service.proc.wait(timeout=40)
    assert time.monotonic() - started < 25, "within the shutdown grace (20 s) and a margin"
    _, alive = psutil.wait_procs(group, timeout=10)
    assert not alive, f"left behind: {[p.name() for p in alive]}"
    assert "Traceback" not in service.log_path.read_text()

    service.launch()
    with httpx.Client(base_url=service.url, timeout=30) as api:
        done = wait_for(api, study["id"], timeout_s=120)
        trials = all_trials(api, study["id"])
    assert done["status"] == "completed"
    assert done["counts"]["complete"] == 4
    # The signal reaches Ray's workers too: a trial whose worker died of it before the
    # scheduler stopped it is recorded as a lost worker instead. Either way it is
    # recorded, failed, and re-run once; none is lost.
    interrupted = [t for t in trials if t["stop_reason"] in ("shutdown", "worker died", "orphaned")]
    assert len(interrupted) >= 2, "the two running trials were recorded, not lost"
    assert all(t["state"] == "fail" for t in interrupted)
    reruns = [t["retry_of"] for t in trials if t["retry_of"] is not None]
    assert sorted(reruns) == sorted(t["number"] for t in interrupted), "each re-run once"
    assert not [t for t in trials if t["state"] in ("running", "waiting")]


def _local_ray(service: ServiceProcess, name: str) -> psutil.Process:
    assert service.proc is not None
    for proc in psutil.Process(service.proc.pid).children(recursive=True):
        if proc.name() == name:
            return proc
    raise AssertionError(f"no {name} under the service")


def test_the_embedded_default_restarts_its_local_ray(
    embedded: tuple[ServiceProcess, Path],
) -> None:
    """The raylet of the service's own local Ray is killed mid-study: ``/healthz`` names Ray
    meanwhile, the service starts a new local Ray, and the trials lost with the old one are
    re-run, so the study ends with exactly ``n_trials`` complete; SIGTERM then still stops
    it gracefully."""
    service, data_parent = embedded
    storage = f"sqlite:///{data_parent / 'data' / 'adamp-tune.db'}"
    with httpx.Client(base_url=service.url, timeout=30) as api:
        body = synthetic("ray-lost", n_trials=N_TRIALS, max_concurrent=2, fixed=SLOW)
        study = submit(api, **body)
        started_running(api, study["id"])
        raylet = _local_ray(service, "raylet")
        os.kill(raylet.pid, signal.SIGKILL)
        wait_until(lambda: ray_problem(api), 30, 0.5, "/healthz to name Ray")
        wait_until(lambda: healthy(api), 120, 0.5, "a new local Ray")
        assert _local_ray(service, "raylet").pid != raylet.pid
        assert_all_ran_once(api, study["id"], storage, "ray-lost")
    assert service.proc is not None
    assert service.proc.poll() is None, "the service stayed up"
    assert_stops_cleanly(service)
