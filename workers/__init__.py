"""What runs on a Ray worker: the trial runner, the workload registry, built-in workloads.

The names a plug-in package imports to declare its own workload are re-exported here and are
the stable contract for plug-in authors (see "Tune your own model" in the README)::

    from workers import ParamSpec, SearchRange, TrialContext, TrialStopped, Workload

Everything else under ``workers`` is the service's own and may change between releases.
``TrialContext`` and ``TrialStopped`` (which need torch) are loaded on first use, so that the
service, which imports ``workers.messages`` and ``workers.optimizer_specs``, never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.params import ParamSpec
from workers.registry import ENTRY_POINT_GROUP, SearchRange, UnknownWorkload, Workload

if TYPE_CHECKING:
    from workers.context import TrialContext, TrialStopped

__all__ = [
    "ENTRY_POINT_GROUP",
    "ParamSpec",
    "SearchRange",
    "TrialContext",
    "TrialStopped",
    "UnknownWorkload",
    "Workload",
]


def __getattr__(name: str) -> Any:
    if name in ("TrialContext", "TrialStopped"):
        from workers import context  # noqa: PLC0415 - imports torch: only when asked for

        return getattr(context, name)
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
