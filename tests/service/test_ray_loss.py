"""The service survives losing Ray: trials lost with it run again, no study fails or sticks.

Team mode: the Ray head is killed in the middle of a study and started again on the same
port; the service says 503 naming Ray meanwhile, joins the new head, and the study ends with
exactly ``n_trials`` complete. The test has a Ray of its own, since killing the session's
cluster would break the tests sharing it. The embedded default's local Ray, killed and
started again by the service, is tested with the other embedded tests
(``test_embedded.py``), on their service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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
