"""Trials in threads of this process: the scheduler's logic and the API without a cluster.

Used by tests (the API built in-process with ``create_app(settings, cluster=ThreadCluster())``,
the scheduler's own tests) and for debugging a workload. A thread cannot be killed, so a
cancelled trial stops at its next event.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.cluster.base import (
    Capacity,
    ClusterUnavailable,
    Connection,
    Ended,
    Event,
    NodeCapacity,
    Outcome,
    Raised,
    describe,
)
from workers.messages import Placement, TrialEvent, TrialRequest


@dataclass(eq=False)  # kept in a set: hashed by identity
class _ThreadTrial:
    outcomes: queue.Queue[Outcome]
    stop: threading.Event
    cpus: float
    gpus: float


class ThreadCluster:
    """One node, ``local``, with ``cpus`` and ``gpus``; each trial runs in a thread."""

    def __init__(self, cpus: float = 2.0, gpus: float = 0.0) -> None:
        self._cpus, self._gpus = cpus, gpus
        self._ids = itertools.count()
        self._running: set[_ThreadTrial] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """Nothing to connect to."""

    def stopping(self) -> None:
        """Take no new trial."""
        self._stopping = True

    def close(self) -> None:
        """Stop every trial still running (each at its next event)."""
        with self._lock:
            for trial in self._running:
                trial.stop.set()

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        if self._stopping:
            raise ClusterUnavailable("the service is stopping")
        # The runner (and so torch) is imported only once a trial actually runs here.
        from workers.runner import run_trial  # noqa: PLC0415

        trial = _ThreadTrial(queue.Queue(), threading.Event(), cpus, gpus)
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
                trial.outcomes.put(Raised(describe(err)))
            finally:
                stream.close()  # type: ignore[attr-defined]
                with self._lock:
                    self._running.discard(trial)

        with self._lock:
            self._running.add(trial)
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

    def nodes(self, *, dead: bool = False) -> list[NodeCapacity]:
        resources = {"CPU": self._cpus, "GPU": self._gpus}
        return [NodeCapacity("local", self._cpus, self._gpus, "127.0.0.1", True, True, resources)]

    def capacity(self) -> Capacity:
        with self._lock:
            cpus = sum(t.cpus for t in self._running)
            gpus = sum(t.gpus for t in self._running)
        return Capacity(self._cpus, max(0.0, self._cpus - cpus), self._gpus, self._gpus - gpus)

    def connection(self) -> Connection:
        return Connection(True)
