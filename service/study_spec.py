"""The stored study spec: what the scheduler runs, validated once at submission.

``StudyCreate`` is the API's input and checks a request against the plug-ins installed
*now*; ``StudySpec`` is what was accepted, written into ``Study.spec`` (JSON, with a
``version``) and read back by the scheduler without looking at the registry again. It
carries what the registry would otherwise be asked for at each trial: the kind of every
searched value (for Optuna's distributions), the optimizer's knob names and the workload's
argument defaults. So uninstalling a plug-in never fails a queued study on load: its trials
reach a worker, which fails them with a clear "unknown workload" message.

Specs written before versions (the plain ``StudyCreate`` dump) still load: what they lack
is filled in from the registry when the workload is still installed, else inferred from the
search space itself (whole-number bounds are integers).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import (
    Dimension,
    Direction,
    OptimizerName,
    PrunerName,
    Resources,
    SamplerName,
    StudyCreate,
)
from workers.optimizer_specs import OPTIMIZERS
from workers.registry import UnknownWorkload, get_workload

SPEC_VERSION: Literal[1] = 1

ValueKind = Literal["float", "int", "bool", "str"]


class StudySpec(BaseModel):
    """A study as accepted: the scheduler's only configuration of it (``Study.spec``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal[1] = SPEC_VERSION
    name: str
    workload: str
    optimizer: OptimizerName
    search_space: dict[str, Dimension]
    fixed: dict[str, Any] = Field(default_factory=dict)
    n_trials: int
    max_concurrent: int
    timeout_s: float | None = None
    sampler: SamplerName
    pruner: PrunerName
    direction: Direction
    resources: Resources = Field(default_factory=Resources)
    seed: int | None = None
    priority: int = 0
    kinds: dict[str, ValueKind] = Field(default_factory=dict)
    """The kind of each searched knob or argument, from the registry at submission."""
    knob_names: list[str] = Field(default_factory=list)
    """The optimizer's knobs (the rest of a trial's values are workload arguments)."""
    workload_args: dict[str, Any] = Field(default_factory=dict)
    """The workload's arguments and their defaults at submission."""
    checkpoints: bool = False
    """Whether the workload saves checkpoints (so a preempted trial resumes, not restarts)."""

    @classmethod
    def from_request(cls, request: StudyCreate) -> StudySpec:
        """The spec of a validated request (the registry is asked here, once)."""
        workload = get_workload(request.workload)
        specs = {**OPTIMIZERS[request.optimizer].knobs, **workload.args}
        return cls.model_validate(
            {
                **request.model_dump(mode="json"),
                "version": SPEC_VERSION,
                "kinds": {k: specs[k].kind for k in request.search_space},
                "knob_names": list(OPTIMIZERS[request.optimizer].knobs),
                "workload_args": {k: s.default for k, s in workload.args.items()},
                "checkpoints": workload.checkpoints,
            }
        )

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> StudySpec:
        """Read ``Study.spec``; a spec stored before versions is upgraded in memory."""
        if "version" in stored:
            return cls.model_validate(stored)
        spec = cls.model_validate({**stored, "version": SPEC_VERSION})
        knobs = OPTIMIZERS[spec.optimizer].knobs
        try:
            workload = get_workload(spec.workload)
            args, checkpoints = dict(workload.args), workload.checkpoints
        except UnknownWorkload:
            args, checkpoints = {}, False
        specs = {**knobs, **args}
        kinds = {
            k: specs[k].kind if k in specs else _inferred_kind(dim)
            for k, dim in spec.search_space.items()
        }
        defaults = {k: s.default for k, s in args.items()}
        for key in [*spec.search_space, *spec.fixed]:  # arguments the study itself names
            if key not in knobs:
                defaults.setdefault(key, None)
        return spec.model_copy(
            update={
                "kinds": kinds,
                "knob_names": list(knobs),
                "workload_args": defaults,
                "checkpoints": checkpoints,
            }
        )

    def stored(self) -> dict[str, Any]:
        """The JSON written into ``Study.spec``."""
        return self.model_dump(mode="json")

    def with_changes(self, **changes: Any) -> StudySpec:
        """The spec after a ``PATCH`` (priority, max_concurrent)."""
        return self.model_copy(update=changes)

    @property
    def grid_size(self) -> int | None:
        """Number of grid points, when the sampler is ``grid``."""
        if self.sampler != "grid":
            return None
        return math.prod(dim.grid_count or 0 for dim in self.search_space.values())

    @property
    def target(self) -> int:
        """Trials to finish: ``n_trials``, or fewer when a grid has fewer points."""
        grid = self.grid_size
        return self.n_trials if grid is None else min(grid, self.n_trials)

    def split_params(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A trial's optimizer knobs and workload arguments: sampled values over fixed ones
        over the workload's defaults."""
        merged = {**self.fixed, **params}
        knobs = {k: v for k, v in merged.items() if k in self.knob_names}
        args = {k: merged.get(k, default) for k, default in self.workload_args.items()}
        return knobs, args


def _inferred_kind(dim: Dimension) -> ValueKind:
    """The kind of a searched value whose workload is gone: what its bounds say."""
    if dim.choices is not None:
        return "str"  # categorical: the kind only matters for ranges
    bounds = [b for b in (dim.low, dim.high, dim.step) if b is not None]
    return "int" if bounds and all(float(b).is_integer() for b in bounds) else "float"


def target_of(stored: dict[str, Any]) -> int:
    """``StudySpec.target`` of a stored spec."""
    return StudySpec.from_stored(stored).target
