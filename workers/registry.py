"""The workload registry: built-in workloads plus those a team installs through entry points.

A workload is registered by name and the API only ever refers to it by that name: it never
accepts code or import paths from a request. A team ships its own training code as a package
installed on the workers (and on the service, which validates arguments) with an entry point::

    [project.entry-points."adamp_tune.workloads"]
    my-model = "my_package.tuning:workload"   # a workers.Workload object

A name the registry does not know is looked up once more in the installed entry points before
``UnknownWorkload`` is raised, so a package installed into a running worker is found by its
next trial; the message of that error names the workload and what is installed instead.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from workers.params import ParamSpec

if TYPE_CHECKING:
    from workers.context import TrialContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "adamp_tune.workloads"
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class SearchRange:
    """A default search range for one knob: ``[low, high]`` (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Workload:
    """A named training function that a trial runs.

    ``train(ctx)`` trains with ``ctx.build_optimizer(...)``, calls ``ctx.report(value, step)``
    after each epoch (so the pruner can stop it early) and returns the final metric (or
    ``None`` to use the last reported value). ``args`` declares the workload's own
    arguments (set through a study's ``fixed`` or searched); ``default_space`` gives, per
    optimizer name, the search space a study uses when it does not give one.
    """

    name: str
    train: Callable[[TrialContext], float | None]
    metric: str
    direction: Direction
    description: str
    args: Mapping[str, ParamSpec] = field(default_factory=dict)
    default_space: Mapping[str, Mapping[str, SearchRange]] = field(default_factory=dict)
    checkpoints: bool = False
    """Whether ``train`` saves checkpoints and resumes from them: a trial of such a workload
    may be preempted for a higher-priority study and resumes later where it stopped (others
    only when ``ADAMP_TUNE_PREEMPT_NON_CHECKPOINTING`` allows, as they restart)."""


_BUILTINS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Register a built-in workload (used by this package's own modules)."""
    if workload.name in _BUILTINS:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    _BUILTINS[workload.name] = workload
    return workload


def _load_builtins() -> None:
    # Imported for their registration side effect; kept here so that importing the
    # registry alone never pulls in torch models until workloads are needed.
    import workers.builtin  # noqa: F401, PLC0415


PLUGIN_RESCAN_S = 60.0
"""How long the installed plug-ins are remembered: scanning the entry points reads every
installed distribution's metadata, far too slow to do on each API request, while a package
installed into a running service still shows up within a minute."""
_plugins: tuple[float, dict[str, Workload]] | None = None
_sources: dict[str, str] = {}  # plug-in workload name -> "distribution version (module:object)"


def _from_entry_points() -> dict[str, Workload]:
    global _plugins  # noqa: PLW0603 - a process-wide cache of the scan below
    now = time.monotonic()
    if _plugins is None or now - _plugins[0] > PLUGIN_RESCAN_S:
        _plugins = (now, _scan_entry_points())
    return _plugins[1]


def _scan_entry_points() -> dict[str, Workload]:
    found: dict[str, Workload] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj: Any = ep.load()
        except Exception:  # a broken plug-in must not take the service down
            log.exception("could not load workload entry point %r", ep.value)
            continue
        workload = obj() if callable(obj) and not isinstance(obj, Workload) else obj
        if not isinstance(workload, Workload):
            log.error("entry point %r is not a workers.registry.Workload", ep.value)
            continue
        if workload.name in _BUILTINS or workload.name in found:
            log.error("entry point %r reuses the workload name %r", ep.value, workload.name)
            continue
        found[workload.name] = workload
        dist = ep.dist
        _sources[workload.name] = f"{dist.name} {dist.version} ({ep.value})" if dist else ep.value
    return found


def provider(name: str) -> str:
    """Where a registered workload comes from: ``built-in`` or its package and entry point."""
    _load_builtins()
    return "built-in" if name in _BUILTINS else _sources.get(name, "unknown")


def all_workloads() -> dict[str, Workload]:
    """Every registered workload by name: the built-ins, then the installed plug-ins."""
    _load_builtins()
    return {**_BUILTINS, **_from_entry_points()}


class UnknownWorkload(KeyError):
    """No workload of this name is registered in this Python environment.

    On a Ray worker it means the package that provides the workload is not installed there;
    the message says so in one line (the scheduler records the last line of an error).
    """

    def __init__(self, name: str, installed: list[str], where: str = "here") -> None:
        super().__init__(name)
        self.name = name
        self.installed = installed
        self.where = where

    def __reduce__(self) -> tuple[type[UnknownWorkload], tuple[str, list[str], str]]:
        # Pickled on a Ray worker and raised again in the scheduler: keep every field.
        return (type(self), (self.name, self.installed, self.where))

    def __str__(self) -> str:
        return (
            f"workload {self.name!r} is not installed {self.where} (installed: "
            f"{', '.join(self.installed) or 'none'}); install the package that provides it "
            "on the service and on every Ray worker"
        )


def get_workload(name: str) -> Workload:
    """The workload called ``name``; ``UnknownWorkload`` (a ``KeyError``) if none is installed.

    A name missing from the remembered scan triggers a fresh one first, so a plug-in installed
    since the last scan is found at once rather than within ``PLUGIN_RESCAN_S``.
    """
    global _plugins  # noqa: PLW0603 - see _from_entry_points
    _load_builtins()
    if name in _BUILTINS:
        return _BUILTINS[name]
    plugins = _from_entry_points()
    if name not in plugins:
        importlib.invalidate_caches()  # see files installed since this process started
        _plugins = (time.monotonic(), _scan_entry_points())
        plugins = _plugins[1]
    if name not in plugins:
        raise UnknownWorkload(name, sorted({*_BUILTINS, *plugins}))
    return plugins[name]
