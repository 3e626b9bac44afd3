"""Connecting this process to Ray: a local Ray (the embedded default) or a cluster."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
