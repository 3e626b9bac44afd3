"""Where trials run, as the scheduler and the API see it: one ``Cluster`` interface.

The scheduler submits trials, polls their outcomes and cancels them; the API asks for the
nodes, the capacity in use and whether the cluster is reachable at all. ``RayCluster``
(``service.cluster.ray``) is the real one and the only place the service touches Ray;
``ThreadCluster`` (``service.cluster.threads``) runs trials in threads of this process, for
tests of the scheduler and of the API without a Ray cluster. Both classify how a trial ended
the same way: a ``Crashed`` trial (worker or node died) is re-run by the scheduler, a
``Raised`` one (the workload's own exception) is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.messages import TrialEvent, TrialRequest


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
    """The worker process or its node died, or the cluster was lost: the trial is re-run.

    ``reason`` is recorded as the trial's stop reason: ``worker died``, or ``orphaned`` when
    the trial was lost with its node or the service lost its connection to the cluster.
    """

    error: str
    reason: str = "worker died"


Outcome = Event | Ended | Raised | Crashed


class ClusterUnavailable(RuntimeError):
    """The cluster takes no trial now: it was lost and is being reconnected, or the service
    is stopping. Expected, and said in one line: the trial is failed and run again later."""


@dataclass(frozen=True)
class NodeCapacity:
    """One node of the cluster and its total resources."""

    node_id: str
    cpus: float
    gpus: float
    address: str = ""
    alive: bool = True
    is_head: bool = False
    resources: Mapping[str, float] = field(default_factory=dict)
    """Every resource the node declares (custom ones included), by name."""


@dataclass(frozen=True)
class Capacity:
    """Resources of the live nodes, in total and free right now (the cluster's own view,
    which lags the scheduler's by up to a few seconds)."""

    cpus_total: float = 0.0
    cpus_free: float = 0.0
    gpus_total: float = 0.0
    gpus_free: float = 0.0


@dataclass(frozen=True)
class Connection:
    """Whether the service is connected to its cluster, and if not, why (for ``/healthz``)."""

    connected: bool
    problem: str | None = None


class Cluster(Protocol):
    """What the scheduler and the API need from a cluster.

    ``nodes``, ``capacity`` and ``connection`` never block: implementations answer from a
    view refreshed in the background, since a cluster that is down can take many seconds
    to say so, and neither the scheduler's loop nor a health check may wait for it.
    """

    def start(self) -> None:
        """Connect (or start a local cluster); called once when the service starts."""

    def stopping(self) -> None:
        """The service has begun to stop: take no new trial and do not reconnect a lost
        cluster (the running trials are still stopped, polled and cancelled until
        ``close``)."""

    def close(self) -> None:
        """Disconnect; anything this process started is stopped."""

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        """Start a trial; returns an opaque handle."""

    def poll(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        """The next outcome of each handle that has one, waiting up to ``timeout`` seconds."""

    def cancel(self, handle: Any, *, force: bool = False) -> None:
        """Ask a trial to stop; its stream then ends (``Ended``). ``force`` kills its
        worker instead, for a trial that did not stop when asked."""

    def nodes(self, *, dead: bool = False) -> list[NodeCapacity]:
        """The live nodes (and the dead ones still known, with ``dead=True``)."""

    def capacity(self) -> Capacity:
        """Total and free resources of the live nodes."""

    def connection(self) -> Connection:
        """Whether the cluster is reachable now."""


def describe(err: BaseException) -> str:
    """One line naming an error, short enough to store with a trial."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:2000]
