"""The service survives losing Ray: trials lost with it run again, no study fails or sticks.

Team mode: the Ray head is killed in the middle of a study and started again on the same
port; the service says 503 naming Ray meanwhile, joins the new head, and the study ends with
exactly ``n_trials`` complete. The test has a Ray of its own, since killing the session's
cluster would break the tests sharing it. The embedded default's local Ray, killed and
started again by the service, is tested with the other embedded tests
(``test_embedded.py``), on their service.

And a service that is stopping does not join Ray again: a signal to its whole process group
ends its local Ray with it, and the service used to start a new one only to stop it, with a
traceback per trial it could not submit meanwhile. Tested on ``RayCluster`` itself, with
Ray's joining and leaving replaced, since in a real stop the timing decides whether the
loss is seen at all.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cluster import ClusterUnavailable, ray_cluster_class
from service.settings import Settings
from tests.support.processes import wait_until
from tests.support.ray_cluster import RayCluster
from tests.support.ray_loss import (
    N_TRIALS,
    SLOW,
    assert_all_ran_once,
    assert_stops_cleanly,
    healthy,
    ray_problem,
    started_running,
)
from tests.support.service_process import ServiceProcess
from tests.support.studies import submit, synthetic

pytestmark = pytest.mark.ray


@pytest.fixture
def own_cluster(artifacts_dir: Path) -> Iterator[RayCluster]:
    """A one-node Ray of this test's own (2 CPUs)."""
    cluster = RayCluster.start(artifacts_dir / "ray-loss", head_cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


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
            started_running(api, study["id"])
            own_cluster.kill_head()
            wait_until(lambda: ray_problem(api), 30, 0.5, "/healthz to name Ray")
            assert api.get(f"/api/v1/studies/{study['id']}").json()["status"] == "running"
            own_cluster.start_head()  # the same port, a new cluster
            wait_until(lambda: healthy(api), 120, 0.5, "the service to rejoin Ray")
            assert_all_ran_once(api, study["id"], url, unique_name)
        assert service.proc is not None
        assert service.proc.poll() is None, "the service stayed up"
        assert_stops_cleanly(service)
    finally:
        service.stop()


class _Ended:
    """A local Ray process (GCS or raylet) that has ended."""

    def is_running(self) -> bool:
        return False


@pytest.fixture
def unjoined(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, list, list]:
    """An embedded ``RayCluster`` that believes it started a local Ray, with Ray's joining
    and leaving recorded instead of done."""
    cls = ray_cluster_class()
    module = sys.modules[cls.__module__]
    joins: list[Any] = []
    leaves: list[dict[str, Any]] = []
    monkeypatch.setattr(module, "connect_ray", lambda settings: joins.append(settings) or True)
    monkeypatch.setattr(module, "disconnect_ray", lambda **kwargs: leaves.append(kwargs))
    cluster = cls(Settings(data_dir=tmp_path, ray_address=None))
    cluster.CHECK_EVERY_S = 0.01
    return cluster, joins, leaves


def test_a_local_ray_lost_while_stopping_is_left_for_good(unjoined) -> None:
    cluster, joins, leaves = unjoined
    cluster._connected, cluster._started_here, cluster._local = True, True, [_Ended()]
    cluster.stopping()
    supervisor = threading.Thread(target=cluster._supervise, daemon=True)
    supervisor.start()
    supervisor.join(timeout=10)
    assert not supervisor.is_alive(), "the supervisor ended instead of starting Ray again"
    assert joins == [], "no new local Ray"
    assert leaves == [{"started_here": True, "timeout_s": 20, "for_good": True}]
    assert not cluster.connection().connected
    with pytest.raises(ClusterUnavailable, match="stopping"):
        cluster.submit(None, cpus=1, gpus=0)  # refused before the request is read


def test_a_lost_ray_refuses_trials_at_once_while_it_is_being_left(unjoined) -> None:
    """Leaving a lost Ray holds the cluster's lock for seconds; the scheduler's loop must
    not wait behind it (a stopping service then could not see that it was stopping)."""
    cluster, _, _ = unjoined
    cluster._problem = "ray: the local Ray stopped; reconnecting"
    leaving, release = threading.Event(), threading.Event()

    def leave() -> None:
        with cluster._lock:
            leaving.set()
            release.wait(10)

    threading.Thread(target=leave, daemon=True).start()
    assert leaving.wait(5)
    started = time.monotonic()
    try:
        with pytest.raises(ClusterUnavailable, match="reconnecting"):
            cluster.submit(None, cpus=1, gpus=0)
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
