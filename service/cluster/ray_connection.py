"""Joining and leaving Ray, and reading its nodes without blocking: ``RayCluster``'s Ray calls.

Kept apart from ``service.cluster.ray`` (the cluster's logic) only for size; together they
are the only modules of the service that import Ray.
"""

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
from ray.core.generated import gcs_pb2

from service.cluster.base import NodeCapacity
from service.settings import Settings

log = logging.getLogger(__name__)
NAMESPACE = "adamp-tune"


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` replaces SIGTERM/SIGINT handlers with ones that exit at once; the
    server's own handlers (uvicorn's graceful shutdown) must stay in charge. Off the main
    thread (a reconnect) Ray sets none, and none can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
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


def disconnect_ray(started_here: bool, timeout_s: float = 5.0, *, for_good: bool = False) -> None:
    """Leave Ray; if this process started it, make sure none of its processes outlive us.

    ``ray.shutdown`` can wait a long time for a GCS that a signal to the whole process
    group already ended, so it gets ``timeout_s`` (when this process is stopping,
    ``for_good``, at most 2 s for a local Ray, half a second if its GCS or raylet has
    already ended); then any process of the local Ray still alive is terminated, and killed
    if it does not go. A reconnect leaves with the whole ``timeout_s``: a new ``ray.init``
    must not start while the old ``ray.shutdown`` is still running.
    """
    children = psutil.Process().children(recursive=True) if started_here else []
    if for_good and started_here:
        # A healthy local Ray shuts down in well under a second. One signalled with us
        # (``kill -- -PGID``, systemd's control group) keeps ``ray.shutdown`` waiting its
        # whole time on a GCS that is going or gone; its processes are stopped below anyway.
        timeout_s = min(timeout_s, 0.5 if _core_gone(children) else 2.0)
    stopper = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        log.warning("Ray did not shut down within %.1f s; stopping its processes", timeout_s)
    alive = [p for p in children if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=3)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _core_gone(children: list[psutil.Process]) -> bool:
    """Whether the GCS or the raylet of the local Ray this process started has ended."""
    core = local_ray_core(children)
    try:
        return not core or any(has_ended(p) for p in core)
    except psutil.Error:
        return True


def local_ray_core(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The GCS and the raylet among ``processes``: a local Ray is gone when either ends."""
    return [p for p in processes if process_name(p) in ("gcs_server", "raylet")]


def has_ended(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie not yet reaped counts)."""
    return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def process_name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except psutil.Error:
        return ""


def read_gcs(timeout_s: float) -> tuple[list[NodeCapacity], dict[str, float]]:
    """The nodes and the free resources, asked from the GCS with a time limit.

    Not ``ray.nodes()``: its call waits for the GCS without a limit, and if the GCS comes
    back as a new cluster (a restarted head) while it waits, a check in Ray's C++ core ends
    this process. The GCS client raises an exception in both cases instead.
    """
    worker: Any = ray._private.worker.global_worker
    gcs = worker.gcs_client
    nodes = []
    for info in gcs.get_all_node_info(timeout=timeout_s).values():
        resources = dict(info.resources_total)
        nodes.append(
            NodeCapacity(
                node_id=info.node_id.hex(),
                cpus=resources.get("CPU", 0.0),
                gpus=resources.get("GPU", 0.0),
                address=info.node_manager_address,
                alive=info.state == gcs_pb2.GcsNodeInfo.ALIVE,  # type: ignore[attr-defined]
                is_head=bool(info.is_head_node) or "node:__internal_head__" in resources,
                resources={k: v for k, v in resources.items() if not k.startswith("node:")},
            )
        )
    usage = gcs.get_all_resource_usage(timeout=timeout_s)
    free: dict[str, float] = {}
    for data in getattr(usage, "resource_usage_data", usage).batch:
        for name, amount in data.resources_available.items():
            free[name] = free.get(name, 0.0) + amount
    return nodes, free
