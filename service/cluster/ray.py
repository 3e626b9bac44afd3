"""The Ray cluster: the only module of the service that touches Ray.

``RayCluster`` connects this process to Ray (a local Ray it starts itself, the embedded
default, or the team's cluster at ``RAY_ADDRESS``), runs each trial as a Ray streaming task
(``workers.remote``) placed by Ray's resources, and keeps a view of the nodes and of the
free resources refreshed by a thread of its own: asking Ray's GCS can block for many
seconds when it is down, and neither the scheduler's loop nor ``/healthz`` may wait for it.
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

from service.cluster.base import (
    Capacity,
    Connection,
    Crashed,
    Ended,
    Event,
    NodeCapacity,
    Outcome,
    Raised,
    describe,
)
from service.settings import Settings
from workers.messages import TrialRequest

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


def _node(raw: dict[str, Any]) -> NodeCapacity:
    resources = dict(raw.get("Resources", {}))
    return NodeCapacity(
        node_id=raw["NodeID"],
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
        address=raw.get("NodeManagerAddress", ""),
        alive=bool(raw.get("Alive")),
        is_head="node:__internal_head__" in resources,
        resources={k: v for k, v in resources.items() if not k.startswith("node:")},
    )


class RayCluster:
    """Trials as Ray streaming tasks, on the Ray that ``settings`` names."""

    NODES_EVERY_S = 2.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._started_here = False
        self._nodes: list[NodeCapacity] = []
        self._free: dict[str, float] = {}
        self._nodes_read = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ connection

    def start(self) -> None:
        self._started_here = connect_ray(self._settings)
        self._watcher = threading.Thread(target=self._watch, name="ray-nodes", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        disconnect_ray(started_here=self._started_here)

    def connection(self) -> Connection:
        if not ray.is_initialized():
            return Connection(False, "ray: not connected")
        return Connection(True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._read_view()
            self._stop.wait(self.NODES_EVERY_S)

    def _read_view(self) -> None:
        try:
            self._nodes = [_node(n) for n in ray.nodes()]
            self._free = dict(ray.available_resources())
        except Exception:  # not connected yet, or the GCS is down: keep the last view
            log.debug("could not read Ray's nodes", exc_info=True)
        self._nodes_read.set()

    # ------------------------------------------------------------ the view

    def nodes(self, *, dead: bool = False) -> list[NodeCapacity]:
        self._nodes_read.wait(timeout=10)  # the first view, once, at start-up
        return [n for n in self._nodes if dead or n.alive]

    def capacity(self) -> Capacity:
        alive = self.nodes()
        cpus = sum(n.cpus for n in alive)
        gpus = sum(n.gpus for n in alive)
        free = self._free
        return Capacity(cpus, free.get("CPU", cpus), gpus, free.get("GPU", gpus))

    # ------------------------------------------------------------ trials

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        from workers.remote import submit_trial  # noqa: PLC0415 - the task's module imports Ray's worker side

        return submit_trial(request, num_cpus=cpus, num_gpus=gpus)

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        if not handles:
            return []
        ready, _ = ray.wait(handles, num_returns=len(handles), timeout=timeout, fetch_local=False)
        results: list[tuple[Any, Outcome]] = []
        for gen in ready:
            outcome = self._next(gen)
            if outcome is not None:
                results.append((gen, outcome))
        return results

    def _next(self, gen: Any) -> Outcome | None:  # noqa: PLR0911 - one return per outcome
        """The generator's next outcome, or ``None`` if it has none yet.

        Never blocks: ``next(gen)`` waits without a limit for the task's end once its
        stream has ended, and a cancelled task whose worker is stuck (a long sleep, a C
        call) ends its stream long before its task, which held the whole scheduler loop
        for as long as the workload slept.
        """
        try:
            ref = gen._next_sync(timeout_s=0)
            if ref.is_nil():
                return None
            return Event(ray.get(ref))
        except StopIteration:
            return Ended()
        except ray.exceptions.TaskCancelledError:
            return Ended()
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, ray.exceptions.TaskCancelledError | KeyboardInterrupt):
                return Ended()
            return Raised(describe(cause) if isinstance(cause, BaseException) else describe(err))
        except ray.exceptions.RayError as err:  # worker crashed, node died, object lost
            return Crashed(describe(err))

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        try:
            ray.cancel(handle, force=force)
        except Exception:  # already finished: nothing to stop
            log.debug("cancel of a finished trial ignored", exc_info=True)
