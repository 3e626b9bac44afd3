"""Where trials run, as the scheduler sees it: submit, poll for events, cancel.

``RayExecutor`` runs each trial as a Ray streaming task; ``ThreadExecutor`` runs them in
threads of this process, for tests of the scheduler's logic and for debugging a workload.
Both classify how a trial ended the same way: a ``Crashed`` trial (worker or node died) is
re-run by the scheduler, a ``Raised`` one (the workload's own exception) is not.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from workers.runner import Placement, TrialEvent, TrialRequest, run_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """The trial sent an event (``Started``, ``Report`` or ``Finished``)."""

    event: TrialEvent


@dataclass(frozen=True)
class Ended:
    """The trial's stream ended without a result (it was stopped)."""


@dataclass(frozen=True)
class Raised:
    """The workload raised: a property of its configuration, not retried."""

    error: str


@dataclass(frozen=True)
class Crashed:
    """The worker process or its node died: the trial is re-run."""

    error: str


Outcome = Event | Ended | Raised | Crashed


@dataclass(frozen=True)
class NodeCapacity:
    """Resources of one live node."""

    node_id: str
    cpus: float
    gpus: float


class TrialExecutor(Protocol):
    """What the scheduler needs from a cluster."""

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        """Start a trial; returns an opaque handle."""

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        """The next outcome of each handle that has one, waiting up to ``timeout`` seconds."""

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        """Ask a trial to stop; its stream then ends (``Ended``). ``force`` kills its
        worker instead, for a trial that did not stop when asked."""

    def nodes(self) -> list[NodeCapacity]:
        """The live nodes and their total resources."""


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:2000]


class RayExecutor:
    """Trials as Ray streaming tasks (``workers.remote``), placed by Ray's resources.

    The nodes are read by a thread of their own every ``NODES_EVERY_S``: asking Ray's GCS
    can block for many seconds when it is down, and the scheduler's loop must not.
    """

    NODES_EVERY_S = 2.0

    def __init__(self) -> None:
        import ray  # noqa: PLC0415 - Ray is only needed where this executor is used

        self._ray = ray
        self._nodes: list[NodeCapacity] = []
        self._nodes_read = threading.Event()
        threading.Thread(target=self._watch_nodes, name="ray-nodes", daemon=True).start()

    def _watch_nodes(self) -> None:
        while True:
            try:
                self._nodes = [
                    NodeCapacity(
                        n["NodeID"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)
                    )
                    for n in self._ray.nodes()
                    if n.get("Alive")
                ]
            except Exception:  # not connected yet, or the GCS is down: keep the last view
                log.debug("could not read Ray's nodes", exc_info=True)
            self._nodes_read.set()
            time.sleep(self.NODES_EVERY_S)

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        from workers.remote import submit_trial  # noqa: PLC0415

        return submit_trial(request, num_cpus=cpus, num_gpus=gpus)

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        if not handles:
            return []
        ray = self._ray
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
        ray = self._ray
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
            return Raised(_describe(cause) if isinstance(cause, BaseException) else _describe(err))
        except ray.exceptions.RayError as err:  # worker crashed, node died, object lost
            return Crashed(_describe(err))

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        try:
            self._ray.cancel(handle, force=force)
        except Exception:  # already finished: nothing to stop
            log.debug("cancel of a finished trial ignored", exc_info=True)

    def nodes(self) -> list[NodeCapacity]:
        self._nodes_read.wait(timeout=10)  # the first view, once, at start-up
        return list(self._nodes)


@dataclass
class _ThreadTrial:
    outcomes: queue.Queue[Outcome]
    stop: threading.Event


class ThreadExecutor:
    """Trials in threads of this process: the scheduler's logic without a cluster."""

    def __init__(self, cpus: float = 2.0, gpus: float = 0.0) -> None:
        self._cpus, self._gpus = cpus, gpus
        self._ids = itertools.count()

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        trial = _ThreadTrial(queue.Queue(), threading.Event())
        placement = Placement("local", "127.0.0.1", socket.gethostname(), os.getpid())

        def target() -> None:
            stream: Iterator[TrialEvent] = run_trial(request, placement, poll_s=0.02)
            try:
                for event in stream:
                    trial.outcomes.put(Event(event))
                    if trial.stop.is_set():
                        break
                trial.outcomes.put(Ended())
            except Exception as err:
                trial.outcomes.put(Raised(_describe(err)))
            finally:
                stream.close()  # type: ignore[attr-defined]

        threading.Thread(target=target, daemon=True, name=f"trial-{next(self._ids)}").start()
        return trial

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        results: list[tuple[Any, Outcome]] = []
        waited = False
        while not results:
            for handle in handles:
                try:
                    results.append((handle, handle.outcomes.get_nowait()))
                except queue.Empty:
                    continue
            if results or waited or not handles:
                break
            threading.Event().wait(timeout)
            waited = True
        return results

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        handle.stop.set()  # a thread cannot be killed: it stops at its next event

    def nodes(self) -> list[NodeCapacity]:
        return [NodeCapacity("local", self._cpus, self._gpus)]
