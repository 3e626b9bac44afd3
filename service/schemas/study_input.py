"""What a client sends to create or change a study, and every check made on it.

All input validation lives here, so a handler never re-checks: a bad request is answered
``422`` with the offending field's path (``search_space.lr.high``, ``fixed.epochs``, ...).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.names import mixed_scripts, normalize
from service.schemas.common import (
    SEED_MAX,
    Direction,
    OptimizerName,
    PrunerName,
    SamplerName,
    _field_error,
)
from workers.optimizer_specs import OPTIMIZERS, check_optimizer_combination
from workers.params import MAX_EXACT_INT, ParamSpec
from workers.registry import all_workloads

MAX_TRIALS = 100_000
MAX_CHOICES = 1_000
MAX_GRID_POINTS_PER_KNOB = MAX_CHOICES
"""A grid knob (``choices`` or ``low``/``high``/``step``) visits at most this many points:
Optuna's grid sampler writes each knob's whole list into every trial's row."""
_COUNT_CAP = 10**15


class Dimension(BaseModel):
    """One knob's search range: ``{low, high, log?, step?}`` or ``{choices: [...]}``."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(default=None, description="lower bound (inclusive)")
    high: float | None = Field(default=None, description="upper bound (inclusive)")
    log: bool = Field(default=False, description="sample uniformly in log space")
    step: float | None = Field(default=None, gt=0, description="discretisation step")
    choices: list[float | int | bool | str] | None = Field(
        default=None, min_length=1, max_length=MAX_CHOICES
    )

    @field_validator("choices")
    @classmethod
    def _exact_choices(cls, choices: list[Any] | None) -> list[Any] | None:
        for value in choices or []:
            if isinstance(value, int) and not isinstance(value, bool):
                if abs(value) > MAX_EXACT_INT:
                    raise ValueError(
                        "integer choices must lie within ±2**53 "
                        f"(got a {value.bit_length()}-bit one)"
                    )
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError("choices must be finite numbers")
            elif isinstance(value, str) and len(value) > 256:
                raise ValueError("string choices are at most 256 characters")
        return choices

    @model_validator(mode="after")
    def _one_form(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("give either `choices` or `low`/`high`, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give `low` and `high` (or `choices`)")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("`low` and `high` must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"`low` ({self.low:g}) must be less than `high` ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs `low` > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("`step` cannot be combined with `log`")
        return self

    @property
    def grid_count(self) -> int | None:
        """How many points a grid search visits on this knob (``None``: a continuous range),
        computed without listing them."""
        if self.choices is not None:
            return len(self.choices)
        if self.step is None or self.low is None or self.high is None:
            return None
        intervals = (self.high - self.low) / self.step
        if not math.isfinite(intervals) or intervals >= _COUNT_CAP:
            return _COUNT_CAP  # "more than can be counted": refused by every limit
        return math.floor(intervals + 1e-9) + 1

    @property
    def grid_values(self) -> list[Any] | None:
        """The points a grid search visits, or ``None`` for a continuous range.

        Only listed for a knob that passed ``StudyCreate``'s check (at most
        ``MAX_GRID_POINTS_PER_KNOB`` points), so a tiny ``step`` can never make a huge list.
        """
        count = self.grid_count
        if count is None or self.choices is not None:
            return list(self.choices) if self.choices is not None else None
        low, step = self.low or 0.0, self.step or 1.0
        if count > MAX_GRID_POINTS_PER_KNOB:
            raise ValueError(f"{count} grid points on one knob; at most {MAX_GRID_POINTS_PER_KNOB}")
        return [low + i * step for i in range(count)]


class Resources(BaseModel):
    """What one trial needs: GPUs (fractions pack several trials on one GPU) and CPUs."""

    model_config = ConfigDict(extra="forbid")

    gpus: float = Field(default=0.0, ge=0.0, le=64.0)
    cpus: float = Field(default=1.0, gt=0.0, le=256.0)

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, gpus: float) -> float:
        if gpus > 1 and not float(gpus).is_integer():
            raise ValueError("more than one GPU per trial must be a whole number")
        return gpus


class StudyCreate(BaseModel):
    """A tuning job: which workload to train, which optimizer knobs to search, how."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-adamp-1",
                    "workload": "digits-cnn",
                    "optimizer": "adamp",
                    "search_space": {
                        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                        "delta": {"low": 0.01, "high": 1.0, "log": True},
                        "wd_ratio": {"low": 0.0, "high": 1.0},
                    },
                    "fixed": {"weight_decay": 1e-4, "epochs": 8},
                    "n_trials": 20,
                    "max_concurrent": 2,
                    "sampler": "tpe",
                    "pruner": "median",
                    "resources": {"gpus": 0.25, "cpus": 1},
                    "seed": 0,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=128, description="unique study name")
    workload: str = Field(min_length=1, max_length=64, description="a registered workload")
    optimizer: OptimizerName = "adamp"
    search_space: dict[str, Dimension] = Field(
        default_factory=dict,
        description="knob -> range; empty means the workload's default space",
        max_length=64,
    )
    fixed: dict[str, Any] = Field(
        default_factory=dict,
        description="fixed optimizer knobs and workload arguments",
        max_length=64,
    )
    n_trials: int = Field(default=20, ge=1, le=MAX_TRIALS, strict=True)
    max_concurrent: int = Field(default=1, ge=1, le=1024, strict=True)
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "median"
    direction: Direction | None = Field(default=None, description="default: the workload's")
    resources: Resources = Field(default_factory=Resources)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, strict=True)
    priority: int = Field(default=0, ge=-100, le=100, strict=True)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        """Stored in NFKC form; one script per name (see ``service.names``)."""
        name = normalize(name)
        if not name or len(name) > 128:
            raise ValueError("must be 1 to 128 characters in Unicode NFKC form")
        if name != name.strip():
            raise ValueError("must not start or end with white space")
        if any(not ch.isprintable() for ch in name):
            raise ValueError("must not contain control characters")
        if scripts := mixed_scripts(name):
            raise ValueError(
                f"mixes letters of several scripts ({', '.join(scripts)}), which makes "
                "look-alike names; write it in one script"
            )
        return name

    @model_validator(mode="after")
    def _check_against_registry(self) -> StudyCreate:
        workloads = all_workloads()
        if self.workload not in workloads:
            known = ", ".join(sorted(workloads))
            raise _field_error(
                ("workload",), f"unknown workload {self.workload!r}; known: {known}", self.workload
            )
        workload = workloads[self.workload]
        knob_specs = OPTIMIZERS[self.optimizer].knobs
        specs: dict[str, ParamSpec] = {**knob_specs, **workload.args}
        names = ", ".join(specs)

        if not self.search_space:
            defaults = workload.default_space.get(self.optimizer, {})
            self.search_space = {
                k: Dimension(low=r.low, high=r.high, log=r.log)
                for k, r in defaults.items()
                if k not in self.fixed
            }
        for key, dim in self.search_space.items():
            loc: tuple[str | int, ...] = ("search_space", key)
            if key not in specs:
                raise _field_error(
                    loc,
                    f"{key!r} is not a knob of {self.optimizer} or an argument of "
                    f"{self.workload}; choose from {names}",
                    key,
                )
            spec = specs[key]
            if not spec.tunable:
                raise _field_error(loc, f"{key!r} cannot be searched", key)
            if spec.kind in ("bool", "str") and dim.choices is None:
                raise _field_error(loc, f"{key!r} is a {spec.kind}: search it with `choices`", key)
            if spec.kind == "int" and dim.choices is None:
                for bound in ("low", "high", "step"):
                    value = getattr(dim, bound)
                    if value is not None and not float(value).is_integer():
                        raise _field_error(
                            (*loc, bound), f"{key!r} is an integer: `{bound}` must be whole", value
                        )
            values: list[tuple[str | int, Any]] = (
                list(enumerate(dim.choices))
                if dim.choices is not None
                else [("low", dim.low), ("high", dim.high)]
            )
            for where, value in values:
                sub_loc = (*loc, "choices", where) if dim.choices is not None else (*loc, where)
                try:
                    spec.check(value)
                except ValueError as err:
                    raise _field_error(sub_loc, f"{key}: {err}", value) from None
            if self.sampler == "grid":
                count = dim.grid_count
                if count is None:
                    raise _field_error(
                        loc, "the grid sampler needs `choices` or a `step` for every knob", key
                    )
                if count > MAX_GRID_POINTS_PER_KNOB:
                    raise _field_error(
                        (*loc, "step"),
                        f"{count:,} grid points on {key!r}; a grid knob has at most "
                        f"{MAX_GRID_POINTS_PER_KNOB}: use a larger `step`",
                        dim.step,
                    )
        if not self.search_space:
            raise _field_error(
                ("search_space",),
                f"nothing to search: give at least one knob (no default space for "
                f"{self.optimizer} on {self.workload})",
                {},
            )

        for key, value in self.fixed.items():
            loc = ("fixed", key)
            if key not in specs:
                raise _field_error(
                    loc,
                    f"{key!r} is not a knob of {self.optimizer} or an argument of "
                    f"{self.workload}; choose from {names}",
                    value,
                )
            if key in self.search_space:
                raise _field_error(loc, f"{key!r} is both fixed and searched", value)
            try:
                self.fixed[key] = specs[key].check(value)
            except ValueError as err:
                raise _field_error(loc, f"{key}: {err}", value) from None

        fixed_knobs = {k: v for k, v in self.fixed.items() if k in knob_specs}
        settled = {
            k: fixed_knobs.get(k, s.default)
            for k, s in knob_specs.items()
            if k not in self.search_space
        }
        try:
            check_optimizer_combination(self.optimizer, settled)
        except ValueError as err:
            raise _field_error(("fixed",), str(err), self.fixed) from None
        if self.direction is None:
            self.direction = workload.direction
        return self

    @property
    def grid_size(self) -> int | None:
        """Number of grid points, when the sampler is ``grid`` (computed, never listed)."""
        if self.sampler != "grid":
            return None
        return math.prod(dim.grid_count or 0 for dim in self.search_space.values())


def _not_nullable(schema: dict[str, Any]) -> None:
    """The JSON schema of a partial update: at least one field, none of them ``null``."""
    schema["minProperties"] = 1
    schema["examples"] = [{"priority": 5}]
    for prop in schema.get("properties", {}).values():
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if options:
            prop.update(options[0])
        prop.pop("default", None)


class StudyUpdate(BaseModel):
    """What may change while a study is queued or running (at least one of the two)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_not_nullable)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None:
                    raise ValueError(f"`{key}` cannot be null: leave it out to keep it")
        return data

    priority: int | None = Field(default=None, ge=-100, le=100, strict=True)
    max_concurrent: int | None = Field(default=None, ge=1, le=1024, strict=True)

    @model_validator(mode="after")
    def _something(self) -> StudyUpdate:
        if self.priority is None and self.max_concurrent is None:
            raise ValueError("give `priority` and/or `max_concurrent`")
        return self
