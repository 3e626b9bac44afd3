"""The FastAPI application: start-up (database, Optuna storage, Ray, scheduler) and routes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import ray
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from service import dashboard, metrics, runtime
from service.api import cluster, errors, health, studies, trials, workloads
from service.optuna_glue import storage_for
from service.scheduler import Scheduler
from service.scheduler.executor import RayExecutor
from service.settings import Settings
from service.state import AppState

log = logging.getLogger(__name__)

API_DESCRIPTION = """
Tune AdamP and SGDP (and the AdamW/SGD baselines) on your team's GPU cluster.

Submit a study with `POST /api/v1/studies`; the scheduler runs its trials on Ray workers and
records everything in the database, where `optuna.load_study(study_name=..., storage=...)`
and `optuna-dashboard` can read it too.
"""


def build_state(settings: Settings) -> AppState:
    """Open the database (migrating it), Optuna's storage, and the scheduler (not started)."""
    url = settings.resolved_database_url
    engine = create_db_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    storage = storage_for(url)
    scheduler = (
        Scheduler(
            sessions,
            storage,
            RayExecutor(),
            lease_s=settings.scheduler_lease_s,
            max_trial_attempts=settings.max_trial_attempts,
            max_gpus_per_user=settings.max_gpus_per_user,
        )
        if settings.scheduler
        else None
    )
    return AppState(settings, engine, sessions, storage, scheduler)


class LatencyMiddleware:
    """Records each request's latency by route in ``metrics.REQUEST_LATENCY``.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) costs
    a task and a stream per request, a sizeable share of a small JSON answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            metrics.REQUEST_LATENCY.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; everything heavy happens in its lifespan, not at import."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started_ray = runtime.connect_ray(settings)
        state = build_state(settings)
        app.state.adamp = state
        if state.scheduler is not None:
            state.scheduler.start()
        log.info(
            "adamp-tune ready on http://%s:%s (database %s)",
            settings.host,
            settings.port,
            state.engine.url.render_as_string(hide_password=True),
        )
        try:
            yield
        finally:
            if state.scheduler is not None:
                state.scheduler.stop(settings.shutdown_grace_s)
            state.engine.dispose()
            if started_ray:
                ray.shutdown()

    app = FastAPI(
        title="adamp-tune",
        version="1",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)

    app.add_middleware(LatencyMiddleware)
    for router in (studies.router, trials.router, workloads.router, cluster.router, health.router):
        app.include_router(router)
    dashboard.install(app)
    return app
