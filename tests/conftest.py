"""Session-wide real parts: one Ray cluster and one service per database for the whole run.

Starting Ray and a service costs seconds, so every test that needs them shares these; tests
keep out of each other's way by giving their studies unique names.

``make test`` runs two lanes side by side (``pytest -n 2``, tests/support/lanes.py): every
module on the session's Ray cluster or PostgreSQL in one process, so they still start once,
and the rest beside it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium
from tests.support.in_process import InProcessService
from tests.support.postgres import POSTGRES, fresh_database
from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.tokens import make_tokens

pytest_plugins = ["pytester", "tests.support.lanes"]

_names = itertools.count()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave logs and screenshots (``test-artifacts/``, kept after the run)."""
    path = Path(os.environ.get("ADAMP_TUNE_TEST_ARTIFACTS", "test-artifacts")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own for this session."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def ray_cluster(
    tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[RayCluster]:
    """A head node (2 CPUs, no GPU) and a worker node declaring 2 CPUs and 2 GPUs."""
    gpu_worker = {"cpus": 2, "gpus": 2, "resources": {"gpu_node": 1}}
    cluster = RayCluster.start(artifacts_dir, head_cpus=2, workers={"gpu-worker": gpu_worker})
    try:
        yield cluster
    finally:
        cluster.stop()


def _service(
    database_url: str, cluster: RayCluster, artifacts_dir: Path, name: str
) -> Iterator[ServiceProcess]:
    env = dict(cluster.env, RAY_ADDRESS=cluster.address)
    service = ServiceProcess.start(database_url, env, artifacts_dir / f"service-{name}.log")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def sqlite_service(
    tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster, artifacts_dir: Path
) -> Iterator[ServiceProcess]:
    """The service on a SQLite file (the embedded default's database) and the test cluster."""
    db = tmp_path_factory.mktemp("sqlite") / "adamp-tune.db"
    yield from _service(f"sqlite:///{db}", ray_cluster, artifacts_dir, "sqlite")


@pytest.fixture(scope="session")
def postgres_service(
    postgres_url: str, ray_cluster: RayCluster, artifacts_dir: Path
) -> Iterator[ServiceProcess]:
    """The service on the session's PostgreSQL database and the test cluster."""
    yield from _service(postgres_url, ray_cluster, artifacts_dir, "postgres")


@pytest.fixture(params=["sqlite", POSTGRES])
def service(request: pytest.FixtureRequest) -> ServiceProcess:
    """Each test using it runs once against SQLite and once against PostgreSQL."""
    svc: ServiceProcess = request.getfixturevalue(f"{request.param}_service")
    return svc


@pytest.fixture
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def sqlite_api(sqlite_service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_service.url, timeout=30) as client:
        yield client


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A study name no other test uses."""
    return f"{request.node.name[:80]}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def local_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    """The app in this process on a SQLite file and a thread cluster: no Ray, no subprocess.

    For tests of what the API answers (validation, reads); those that need Ray's placement
    or a separate process use ``sqlite_service``.
    """
    path = tmp_path_factory.mktemp("local")
    service = InProcessService.start(f"sqlite:///{path / 'local.db'}", path / "data")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def local_api(local_service: InProcessService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_service.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessService, dict[str, str]]]:
    """A service with ``auth=required`` (in this process, on a thread cluster) and tokens
    made with the CLI before it started: ``alice``, ``bob``, ``root`` (admin), and
    ``revoked`` (created, then revoked)."""
    path = tmp_path_factory.mktemp("auth")
    url = f"sqlite:///{path / 'auth.db'}"
    tokens = make_tokens(url, {"alice": [], "bob": [], "root": ["--admin"], "revoked": []})
    service = InProcessService.start(url, path / "data", auth="required")
    try:
        yield service, tokens
    finally:
        service.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium for the session; each test opens a context of its own."""
    with chromium() as launched:
        yield launched
