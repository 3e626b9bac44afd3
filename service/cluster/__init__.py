"""Where trials run: the ``Cluster`` interface and its outcome types.

The implementations are imported from their modules, ``service.cluster.ray.RayCluster``
and ``service.cluster.threads.ThreadCluster``, so that using one never imports the other's
dependencies (Ray).
"""

from service.cluster.base import (
    Capacity,
    Cluster,
    Connection,
    Crashed,
    Ended,
    Event,
    NodeCapacity,
    Outcome,
    Raised,
)

__all__ = [
    "Capacity",
    "Cluster",
    "Connection",
    "Crashed",
    "Ended",
    "Event",
    "NodeCapacity",
    "Outcome",
    "Raised",
]
