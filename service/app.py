"""The FastAPI application: start-up (database, Optuna storage, Ray, scheduler) and routes."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from service import dashboard, docs, quotas
from service.api import (
    checkpoints,
    comparisons,
    errors,
    health,
    session,
    studies,
    trials,
    workloads,
)
from service.api import cluster as cluster_api
from service.checkpoints.retention import Janitor
from service.cluster import Cluster, ray_cluster_class
from service.comparisons.driver import ComparisonDriver
from service.gate import AuthGate
from service.middleware import BodyLimit, LatencyMiddleware, SecurityHeaders
from service.optuna_glue import storage_for
from service.ratelimit import RateLimit
from service.scheduler import Scheduler
from service.settings import Settings
from service.state import AppState
from workers.checkpoints import CheckpointStore, CheckpointStoreError

log = logging.getLogger(__name__)

API_DESCRIPTION = """
Tune AdamP and SGDP (and the AdamW/SGD baselines) on your team's GPU cluster.

Submit a study with `POST /api/v1/studies`; the scheduler runs its trials on Ray workers and
records everything in the database, where `optuna.load_study(study_name=..., storage=...)`
and `optuna-dashboard` can read it too.
"""


def build_state(settings: Settings, cluster: Cluster) -> AppState:
    """Open the database (migrating it), Optuna's storage, and the scheduler (not started)
    that runs trials on ``cluster``."""
    url = settings.resolved_database_url
    engine = create_db_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    storage = storage_for(url)
    scheduler = (
        Scheduler(
            sessions,
            storage,
            cluster,
            lease_s=settings.scheduler_lease_s,
            max_trial_attempts=settings.max_trial_attempts,
            max_preemptions=settings.max_preemptions,
            preempt_non_checkpointing=settings.preempt_non_checkpointing,
            max_gpus_per_user=settings.max_gpus_per_user,
            trial_limits=lambda: quotas.running_trial_limits(sessions, settings),
            checkpoint_url=settings.resolved_checkpoint_url,
        )
        if settings.scheduler
        else None
    )
    return AppState(settings, engine, sessions, storage, scheduler, cluster)


def _share_the_interpreter_with_the_scheduler(settings: Settings) -> None:
    """Keep request handlers from crowding out the scheduler's thread in this process.

    Request handlers that compute (pages, plots) and the scheduler share one interpreter
    lock. With FastAPI's default 40 handler threads, twenty busy readers left the
    scheduler about one turn in twenty, and a thread waiting on the lock waits a whole
    switch interval (5 ms) each time it wants it back after I/O, which the scheduler does
    hundreds of times a second. So handlers run at most ``api_threads`` at a time (the
    rest queue) and the interval is 1 ms.
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    sys.setswitchinterval(0.001)


def _checkpoint_janitor(settings: Settings, state: AppState) -> Janitor | None:
    """Start the clean-up of the checkpoint store where this process runs the scheduler."""
    url = settings.resolved_checkpoint_url
    if url is None or not settings.scheduler:
        return None
    try:
        store = CheckpointStore(url)
    except CheckpointStoreError:
        log.warning("checkpoints: cannot use the store at %s", url, exc_info=True)
        return None
    janitor = Janitor(
        store,
        state.sessions,
        state.storage,
        settings.checkpoint_retention_s,
        settings.checkpoint_sweep_s,
    )
    janitor.start()
    return janitor


def create_app(settings: Settings | None = None, cluster: Cluster | None = None) -> FastAPI:
    """The application; everything heavy happens in its lifespan, not at import.

    ``cluster`` is where trials run: by default the Ray of ``settings`` (started or joined
    when the app starts); tests pass a ``ThreadCluster`` to run the whole app in-process.
    """
    settings = settings or Settings()
    if cluster is None:
        cluster = ray_cluster_class()(settings)
    trials_on = cluster  # named apart: the closure below must not see ``None``

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trials_on.start()
        _share_the_interpreter_with_the_scheduler(settings)
        state = build_state(settings, trials_on)
        app.state.adamp = state
        driver: ComparisonDriver | None = None
        if (scheduler := state.scheduler) is not None:
            scheduler.start()
            # Comparisons advance where the scheduler leads, through ordinary studies.
            driver = ComparisonDriver(
                state.sessions,
                state.storage,
                is_leader=lambda: scheduler.role == "leader",
                stop_study=scheduler.request_stop,
            )
            driver.start()
        janitor = _checkpoint_janitor(settings, state)
        log.info(
            "adamp-tune ready on http://%s:%s (database %s)",
            settings.host,
            settings.port,
            state.engine.url.render_as_string(hide_password=True),
        )
        try:
            yield
        finally:
            trials_on.stopping()  # no new trial, no reconnect, from here on
            if driver is not None:
                driver.stop()
            if state.scheduler is not None:
                state.scheduler.stop(settings.shutdown_grace_s)
            if janitor is not None:
                janitor.stop()
            state.offload.close()
            state.engine.dispose()
            trials_on.close()

    app = FastAPI(
        title="adamp-tune",
        version="1",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)

    # Outermost first: headers on every answer, then the door (before any body is read),
    # then the rate limits (which need to know who is calling), then the size limit on
    # what gets through.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit)
    app.add_middleware(AuthGate)
    app.add_middleware(LatencyMiddleware)
    app.add_middleware(SecurityHeaders)
    for router in (
        studies.router,
        comparisons.router,
        trials.router,
        checkpoints.router,
        workloads.router,
        cluster_api.router,
        health.router,
        session.router,
    ):
        # Any route may be refused by the rate limits (service.ratelimit), before routing;
        # /healthz never is, and /metrics is scraped every few seconds at most.
        limited = router is not health.router
        app.include_router(router, responses=errors.responses(429) if limited else None)
    docs.install(app)
    dashboard.install(app)
    return app
