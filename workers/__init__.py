"""What runs on a Ray worker: the trial runner, the workload registry, built-in workloads.

The names a plug-in package imports to declare its own workload are re-exported here and are
the stable contract for plug-in authors (see "Tune your own model" in the README)::

    from workers import ParamSpec, SearchRange, TrialContext, TrialStopped, Workload

Everything else under ``workers`` is the service's own and may change between releases.
"""

from workers.context import TrialContext, TrialStopped
from workers.params import ParamSpec
from workers.registry import ENTRY_POINT_GROUP, SearchRange, UnknownWorkload, Workload

__all__ = [
    "ENTRY_POINT_GROUP",
    "ParamSpec",
    "SearchRange",
    "TrialContext",
    "TrialStopped",
    "UnknownWorkload",
    "Workload",
]
