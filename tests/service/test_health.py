"""``/healthz`` says 503 and why when no Ray node can take trials (a lost local Ray)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import Response

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from service.api.health import healthz
from service.cluster.threads import ThreadCluster
from service.optuna_glue import storage_for
from service.scheduler import Scheduler


@pytest.mark.parametrize(("cpus", "status"), [(2.0, 200), (0.0, 503)])
def test_health_names_ray_when_no_node_can_take_trials(
    tmp_path: Path, cpus: float, status: int
) -> None:
    url = f"sqlite:///{tmp_path / 'health.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    cluster = ThreadCluster(cpus=cpus)
    scheduler = Scheduler(session_factory(engine), storage_for(url), cluster)
    response = Response()
    answer = healthz(SimpleNamespace(engine=engine, scheduler=scheduler, cluster=cluster), response)  # type: ignore[arg-type]
    assert response.status_code == status
    assert answer.database is True
    if status == 503:
        assert answer.status == "degraded"
        assert answer.ray is False
        assert answer.problems == ["ray: no live node with CPUs can take trials"]
    else:
        assert answer.status == "ok"
        assert answer.problems == []
    engine.dispose()
