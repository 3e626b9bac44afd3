"""Where trials run: the ``Cluster`` interface and its outcome types.

The implementations are imported from their modules, ``service.cluster.ray.RayCluster``
and ``service.cluster.threads.ThreadCluster``, so that using one never imports the other's
dependencies (Ray); ``ray_cluster_class()`` imports Ray's the way the service must.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from service.cluster.base import (
    Capacity,
    Cluster,
    ClusterUnavailable,
    Connection,
    Crashed,
    Ended,
    Event,
    NodeCapacity,
    Outcome,
    Raised,
)

if TYPE_CHECKING:
    from service.cluster.ray import RayCluster

_NO_FAILURE_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def ray_cluster_class() -> type[RayCluster]:
    """``service.cluster.ray.RayCluster``, imported with Ray's failure-signal handler off.

    Ray's C++ core installs a handler for SIGTERM (a stack dump, then death) each time this
    process joins Ray. After the first join the service puts uvicorn's handler back, but a
    join *again* (Ray lost and found, from the supervisor's thread) cannot, since only the
    main thread may set handlers: SIGTERM then killed the service on the spot, without its
    graceful stop (running trials recorded for re-run, a local Ray stopped). Ray reads the
    switch once, when it is first imported, so it is set for that import only and not
    passed on to the processes of a local Ray.
    """
    switched = _NO_FAILURE_HANDLER not in os.environ and "ray" not in sys.modules
    if switched:
        os.environ[_NO_FAILURE_HANDLER] = "1"
    try:
        from service.cluster.ray import RayCluster  # noqa: PLC0415 - only Ray's users import Ray
    finally:
        if switched:
            del os.environ[_NO_FAILURE_HANDLER]
    return RayCluster


__all__ = [
    "Capacity",
    "Cluster",
    "ClusterUnavailable",
    "Connection",
    "Crashed",
    "Ended",
    "Event",
    "NodeCapacity",
    "Outcome",
    "Raised",
    "ray_cluster_class",
]
