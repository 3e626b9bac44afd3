"""``/healthz`` and ``/metrics``: liveness for orchestrators, Prometheus for dashboards."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.deps import StateDep, current_user
from service.api.errors import responses
from service.schemas import HealthOut

router = APIRouter(tags=["health"])


def _version() -> str:
    try:
        return version("adamp-tune")
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "the database or Ray is unavailable"}},
)
def healthz(state: StateDep, response: Response) -> HealthOut:
    """``ok`` when the database answers and Ray has a live node that can take trials;
    ``503`` otherwise, with what is wrong in ``problems``."""
    problems: list[str] = []
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
        problems.append("database: not answering")
    connection = state.cluster.connection()
    ray_ok = connection.connected
    if not ray_ok:
        problems.append(connection.problem or "ray: not connected")
    elif state.scheduler is not None and state.scheduler.live_cpus() <= 0:
        ray_ok = False
        problems.append("ray: no live node with CPUs can take trials")
    role = state.scheduler.role if state.scheduler is not None else "off"
    ok = database and ray_ok
    if not ok:
        response.status_code = 503
    return HealthOut(
        status="ok" if ok else "degraded",
        database=database,
        ray=ray_ok,
        scheduler=role,  # type: ignore[arg-type]
        version=_version(),
        problems=problems,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses=responses(401),
    dependencies=[Depends(current_user)],
)
def metrics() -> Response:
    """Prometheus text exposition of the service's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
