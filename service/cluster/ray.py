"""The Ray cluster: with ``service.cluster.ray_connection``, the only modules of the service
that import Ray.

``RayCluster`` connects this process to Ray (a local Ray it starts itself, the embedded
default, or the team's cluster at ``RAY_ADDRESS``), runs each trial as a Ray streaming task
(``workers.remote``) placed by Ray's resources, and keeps a view of the nodes and of the
free resources refreshed by a thread of its own: asking Ray's GCS can block for many
seconds when it is down, and neither the scheduler's loop nor ``/healthz`` may wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil
import ray

from service.cluster.base import (
    Capacity,
    ClusterUnavailable,
    Connection,
    Crashed,
    Ended,
    Event,
    NodeCapacity,
    Outcome,
    Raised,
    describe,
)
from service.cluster.ray_connection import (
    NAMESPACE,
    connect_ray,
    disconnect_ray,
    has_ended,
    host_port,
    local_ray_core,
    read_gcs,
)
from service.settings import Settings
from workers.messages import Finished, TrialRequest
from workers.remote import submit_trial

log = logging.getLogger(__name__)


@dataclass(eq=False)  # the scheduler keys its trials by handle identity
class _RayTrial:
    """A trial's Ray stream and the connection (``session``) it was submitted on."""

    stream: Any
    session: int


class RayCluster:
    """Trials as Ray streaming tasks, on the Ray that ``settings`` names; survives losing it.

    A supervisor thread checks every ``CHECK_EVERY_S`` that Ray is still there without
    calling Ray (a TCP connection to the GCS in team mode; the local GCS and raylet
    processes in the embedded default), because every Ray call blocks while the GCS is down
    and Ray ends the whole process after a minute of that. After ``LOST_AFTER`` failed
    checks the connection is declared lost: this process leaves Ray (the embedded default
    stops what is left of its local Ray), every trial submitted before ends as ``Crashed``
    (the scheduler fails it as orphaned and runs it again), and the supervisor connects again
    (the embedded default starts a new local Ray), retrying with a growing delay up to
    ``RETRY_MAX_S``. Meanwhile ``connection()`` says why, so ``/healthz`` answers 503, and
    ``submit`` refuses at once (``ClusterUnavailable``) instead of waiting for the leave.
    Once the service is ``stopping()`` a lost Ray is left for good and not joined again: a
    signal to the whole process group (systemd, ``kill -- -PGID``) ends a local Ray at the
    same time as the service, which then restarted it only to stop it.
    A reader thread refreshes the view of the nodes every ``NODES_EVERY_S``.
    """

    NODES_EVERY_S = 2.0
    CHECK_EVERY_S = 1.0
    LOST_AFTER = 3
    RETRY_MAX_S = 15.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._started_here = False
        self._nodes: list[NodeCapacity] = []
        self._free: dict[str, float] = {}
        self._nodes_read = threading.Event()
        self._stop = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # Ray calls of the scheduler vs. leaving/joining Ray
        self._session = 0
        self._connected = False
        self._problem: str | None = "ray: not connected yet"
        self._gcs: tuple[str, int] | None = None
        self._local: list[psutil.Process] = []
        self._ended: list[Any] = []  # streams of ended trials, see _release_ended
        self._orphans: list[Any] = []  # streams of a lost Ray: never released

    # ------------------------------------------------------------ connection

    def start(self) -> None:
        self._connect()
        for name, target in (("ray-supervisor", self._supervise), ("ray-nodes", self._watch)):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stopping(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self._stop.set()
        self._connected = False
        self._leave(for_good=True)

    def connection(self) -> Connection:
        if not self._connected:
            return Connection(False, self._problem or "ray: not connected")
        return Connection(True)

    def _connect(self) -> None:
        """Join (or start) Ray and remember how to tell later that it is still there."""
        with self._lock:
            self._started_here = connect_ray(self._settings)
            self._gcs = host_port(ray.get_runtime_context().gcs_address)
            self._local = (
                local_ray_core(psutil.Process().children(recursive=True))
                if self._started_here
                else []
            )
            self._session += 1
            self._connected, self._problem = True, None
        self._read_view()

    def _alive(self) -> bool:
        """Whether Ray is still there, asked without calling Ray."""
        if self._local:
            return not any(has_ended(p) for p in self._local)
        return self._reachable()

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.wait(self.CHECK_EVERY_S):
            if not self._connected:
                continue
            try:
                alive = self._alive()
            except psutil.Error:
                alive = False
            failures = 0 if alive else failures + 1
            if alive:
                self._release_ended()
            if failures >= self.LOST_AFTER:
                self._lose()
                if self._stopping.is_set():
                    return  # the service is stopping: nothing to run on a new Ray
                self._reconnect()
                failures = 0

    def _release_ended(self) -> None:
        """Let go of the streams of ended trials, just after seeing Ray alive.

        Dropping a stream calls into Ray's core worker, and once Ray has gone (its local
        raylet died) any such call ends this process. So the scheduler never drops the last
        reference itself: streams are released here, and those of a lost Ray never.
        """
        with self._lock:
            if self._connected:
                self._ended.clear()

    def _lose(self) -> None:
        what = "the local Ray stopped" if self._started_here else f"lost Ray at {self._where()}"
        stopping = self._stopping.is_set()
        when = "at the next start" if stopping else "once Ray is back"
        log.error("%s: its running trials are re-run %s", what, when)
        then = "not joined again: the service is stopping" if stopping else "reconnecting"
        self._connected, self._problem = False, f"ray: {what}; {then}"
        self._session += 1  # every trial submitted before is lost with it
        self._orphans += self._ended
        self._ended = []
        self._nodes, self._free = [], {}
        self._leave(timeout_s=20, for_good=self._stopping.is_set())

    def _leave(self, timeout_s: float = 5.0, *, for_good: bool = False) -> None:
        """Leave Ray, waiting a little for a Ray call of the scheduler to return first.

        With the GCS gone leaving takes a few seconds; it must be done within Ray's own
        minute, after which Ray ends this process.
        """
        acquired = self._lock.acquire(timeout=10)
        try:
            disconnect_ray(started_here=self._started_here, timeout_s=timeout_s, for_good=for_good)
        finally:
            if acquired:
                self._lock.release()

    def _reconnect(self) -> None:
        delay, attempt = 1.0, 0
        while not self._stop.is_set() and not self._stopping.is_set():
            attempt += 1
            try:
                if self._settings.embedded_ray or self._ready():
                    self._connect()
                    log.warning("Ray is back (attempt %d): trials run again", attempt)
                    return
            except Exception as err:
                log.warning("could not reach Ray yet (attempt %d): %s", attempt, err)
                with contextlib.suppress(Exception):
                    disconnect_ray(started_here=self._settings.embedded_ray)
            doing = (
                "restarting the local Ray"
                if self._settings.embedded_ray
                else f"waiting for Ray at {self._where()}"
            )
            self._problem = f"ray: {doing} (attempt {attempt}, next in {delay:.0f} s)"
            self._stop.wait(delay)
            delay = min(self.RETRY_MAX_S, delay * 2)

    def _reachable(self) -> bool:
        """Whether the GCS accepts a TCP connection (it may not answer yet, but it is up)."""
        if self._gcs is None:
            return True
        try:
            with socket.create_connection(self._gcs, timeout=1.0):
                return True
        except OSError:
            return False

    def _ready(self) -> bool:
        """Whether the cluster at ``ray_address`` is up and answers a client with a live node.

        Asked from a separate process: joining a head that is still starting can fail a
        check inside Ray's C++ core, which ends the process that tried.
        """
        if not self._reachable():
            return False
        code = (
            "import ray, sys\n"
            f"ray.init(address={self._settings.ray_address!r}, namespace={NAMESPACE!r}, "
            "log_to_driver=False, logging_level='ERROR')\n"
            "sys.exit(0 if any(n['Alive'] for n in ray.nodes()) else 1)\n"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def _where(self) -> str:
        return f"{self._gcs[0]}:{self._gcs[1]}" if self._gcs else str(self._settings.ray_address)

    def _watch(self) -> None:
        while not self._stop.wait(self.NODES_EVERY_S):
            if self._connected:
                self._read_view()

    def _read_view(self) -> None:
        try:
            with self._lock:  # never while leaving Ray: a call then ends the process
                if self._connected:
                    self._nodes, self._free = read_gcs(timeout_s=3)
        except Exception:  # the GCS is down or was replaced: the supervisor sees to it
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
        # Checked before the lock too: leaving a lost Ray holds it for many seconds.
        self._check_accepting()
        with self._lock:
            self._check_accepting()  # Ray would start a local Ray of its own otherwise
            stream = submit_trial(request, num_cpus=cpus, num_gpus=gpus)
            return _RayTrial(stream, self._session)

    def _check_accepting(self) -> None:
        if self._stopping.is_set():
            raise ClusterUnavailable("the service is stopping")
        if not self._connected:
            raise ClusterUnavailable(self._problem or "ray: not connected")

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        lost = Crashed(f"RayLost: {self._problem or 'the Ray cluster was lost'}", "orphaned")
        results: list[tuple[Any, Outcome]] = [
            (h, lost) for h in handles if h.session != self._session
        ]
        self._orphans += [h.stream for h, _ in results]
        current = [h for h in handles if h.session == self._session]
        if results or not current:
            return results
        by_stream = {h.stream: h for h in current}
        try:
            with self._lock:
                if not self._connected:
                    return []
                streams, began = list(by_stream), time.monotonic()
                # Back as soon as one trial has news (a trial that ended frees its slot for
                # the next at once), then everything else that is ready too.
                ready, _ = ray.wait(streams, num_returns=1, timeout=timeout, fetch_local=False)
                if ready and len(streams) > 1:
                    ready, _ = ray.wait(
                        streams, num_returns=len(streams), timeout=0, fetch_local=False
                    )
                for stream in ready:
                    outcome = self._next(stream)
                    if outcome is not None:
                        results.append((by_stream[stream], outcome))
                        if not isinstance(outcome, Event) or isinstance(outcome.event, Finished):
                            self._ended.append(stream)
            if ready and not results:  # ready but nothing to take: never spin on it
                self._stop.wait(max(0.0, timeout - (time.monotonic() - began)))
        except Exception:  # Ray went away under us: the supervisor declares it lost
            log.debug("polling Ray failed", exc_info=True)
            self._stop.wait(timeout)
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
        except (ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError) as err:
            # Lost with its node (or with the whole cluster, when Ray says so before the
            # supervisor sees it): the same outcome as a lost cluster.
            return Crashed(describe(err), "orphaned")
        except ray.exceptions.RayError as err:  # worker crashed, object lost
            return Crashed(describe(err))

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        if handle.session != self._session:
            return  # lost with its cluster: nothing left to stop
        try:
            with self._lock:
                ray.cancel(handle.stream, force=force)
        except Exception:  # already finished: nothing to stop
            log.debug("cancel of a finished trial ignored", exc_info=True)
