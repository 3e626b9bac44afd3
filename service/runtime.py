"""Connecting this process to Ray: a local Ray (the embedded default) or a cluster."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import ray

from service.settings import Settings

log = logging.getLogger(__name__)
NAMESPACE = "adamp-tune"


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` replaces SIGTERM/SIGINT handlers with ones that exit at once; the
    server's own handlers (uvicorn's graceful shutdown) must stay in charge."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def connect_ray(settings: Settings) -> bool:
    """Start a local Ray or join ``settings.ray_address``; returns whether this process
    started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "log_to_driver": settings.log_level == "debug",
        "logging_level": logging.WARNING,
    }
    if settings.embedded_ray:
        log.info("starting a local Ray (embedded mode)")
        with _keep_signal_handlers():
            ray.init(
                num_cpus=settings.ray_num_cpus,
                num_gpus=settings.ray_num_gpus,
                include_dashboard=False,
                **options,
            )
        return True
    log.info("joining the Ray cluster at %s", settings.ray_address)
    with _keep_signal_handlers():
        ray.init(address=settings.ray_address, **options)
    return False


def ray_nodes() -> list[dict[str, Any]]:
    """Ray's view of its live and dead nodes."""
    return list(ray.nodes()) if ray.is_initialized() else []


def available_resources() -> dict[str, float]:
    """Resources free on the cluster right now (Ray's own, slightly lagging, view)."""
    return dict(ray.available_resources()) if ray.is_initialized() else {}


def disconnect_ray(started_here: bool, timeout_s: float = 5.0) -> None:
    """Leave Ray; if this process started it, make sure none of its processes outlive us.

    ``ray.shutdown`` can wait a long time for a GCS that a signal to the whole process
    group already ended, so it gets ``timeout_s``; then any process of the local Ray still
    alive is terminated, and killed if it does not go.
    """
    children = psutil.Process().children(recursive=True) if started_here else []
    stopper = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        log.warning("Ray did not shut down within %.0f s; stopping its processes", timeout_s)
    alive = [p for p in children if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=3)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
