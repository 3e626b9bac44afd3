"""Request and response shapes of ``/api/v1/comparisons``.

A comparison's request is checked by building the study request of every optimizer it
will run (``StudyCreate``), so a bad knob or range is a ``422`` naming the comparison's
own field, exactly as it would be for a study.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.schemas import (
    SEED_MAX,
    Dimension,
    Direction,
    OptimizerName,
    PrunerName,
    Resources,
    ResourcesOut,
    SamplerName,
    StudyCreate,
    StudyStatusName,
    TrialCounts,
    _field_error,
)
from workers.optimizer_specs import OPTIMIZERS
from workers.registry import all_workloads

MAX_COMPARISON_TRIALS = 1_000
"""Tuning trials per optimizer at most: the report reads every one of them."""
MAX_SEEDS = 100
NAME_MAX = 100
"""A comparison's name is at most this long: its studies add ``-adamw-eval`` to it."""
PAIRS = (("adamp", "adamw"), ("sgdp", "sgd"))
"""The differences the report gives when both optimizers of a pair take part."""


def tuning_name(name: str, optimizer: str) -> str:
    """The name of ``optimizer``'s tuning study in comparison ``name``."""
    return f"{name}-{optimizer}"


def evaluation_name(name: str, optimizer: str) -> str:
    """The name of ``optimizer``'s evaluation study (its best configuration, fresh seeds)."""
    return f"{name}-{optimizer}-eval"


class ComparisonCreate(BaseModel):
    """Two to four optimizers, tuned with equal budgets, then evaluated on fresh seeds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "mnist1d-adamp-vs-adamw",
                    "workload": "mnist1d-cnn",
                    "fixed": {"epochs": 10},
                    "optimizers": ["adamp", "adamw"],
                    "n_trials": 20,
                    "seeds": 5,
                    "max_concurrent": 2,
                    "resources": {"gpus": 0, "cpus": 1},
                    "priority": 0,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=NAME_MAX, description="unique comparison name")
    workload: str = Field(min_length=1, max_length=64, description="a registered workload")
    fixed: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="workload arguments and optimizer knobs held fixed; a knob only some "
        "optimizers have applies to those",
    )
    optimizers: list[OptimizerName] = Field(min_length=2, max_length=4)
    n_trials: int = Field(
        default=20, ge=1, le=MAX_COMPARISON_TRIALS, strict=True, description="per optimizer"
    )
    seeds: int = Field(
        default=5,
        ge=2,
        le=MAX_SEEDS,
        strict=True,
        description="fresh seeds each optimizer's best configuration is re-trained with",
    )
    max_concurrent: int = Field(default=1, ge=1, le=1024, strict=True, description="per study")
    resources: Resources = Field(default_factory=Resources)
    priority: int = Field(default=0, ge=-100, le=100, strict=True)
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "median"
    search_space: dict[str, Dimension] = Field(
        default_factory=dict,
        max_length=64,
        description="ranges that replace the workload's default ones, for every optimizer "
        "that has the knob (shared knobs are searched over the same range)",
    )
    direction: Direction | None = Field(default=None, description="default: the workload's")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=SEED_MAX - 1,
        strict=True,
        description="sampler and trial seeds, the same for every optimizer (default: drawn)",
    )

    @field_validator("optimizers")
    @classmethod
    def _distinct(cls, optimizers: list[str]) -> list[str]:
        if len(set(optimizers)) != len(optimizers):
            raise ValueError("name each optimizer once")
        return optimizers

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        checked: str = StudyCreate._printable_name(name)  # the same rules as a study's name
        if len(checked) > NAME_MAX:
            raise ValueError(f"at most {NAME_MAX} characters")
        return checked

    @model_validator(mode="after")
    def _check_studies(self) -> ComparisonCreate:
        workloads = all_workloads()
        if self.workload not in workloads:
            known = ", ".join(sorted(workloads))
            raise _field_error(
                ("workload",), f"unknown workload {self.workload!r}; known: {known}", self.workload
            )
        args = workloads[self.workload].args
        for where, keys in (("fixed", self.fixed), ("search_space", self.search_space)):
            for key in keys:
                if key not in args and not any(key in OPTIMIZERS[o].knobs for o in self.optimizers):
                    raise _field_error(
                        (where, key),
                        f"{key!r} is not a knob of {', '.join(self.optimizers)} or an argument "
                        f"of {self.workload}",
                        key,
                    )
        for optimizer in self.optimizers:
            try:
                self.tuning_request(optimizer, seed=0)
            except ValidationError as err:
                first = err.errors()[0]
                raise _field_error(
                    tuple(first["loc"]), f"for {optimizer}: {first['msg']}", first.get("input")
                ) from None
        if self.direction is None:
            self.direction = workloads[self.workload].direction
        return self

    def _applies(self, optimizer: str, key: str) -> bool:
        return key in OPTIMIZERS[optimizer].knobs or key in all_workloads()[self.workload].args

    def tuning_request(self, optimizer: str, seed: int) -> StudyCreate:
        """The study that tunes ``optimizer``: the same budget, sampler, pruner and seed as
        every other optimizer's, over its default space with this request's ranges."""
        fixed = {k: v for k, v in self.fixed.items() if self._applies(optimizer, k)}
        default = all_workloads()[self.workload].default_space.get(optimizer, {})
        space: dict[str, Any] = {
            k: {"low": r.low, "high": r.high, "log": r.log} for k, r in default.items()
        }
        for key, dim in self.search_space.items():
            if self._applies(optimizer, key):
                space[key] = dim.model_dump(exclude_none=True)
        space = {k: v for k, v in space.items() if k not in fixed}
        return StudyCreate.model_validate(
            {
                "name": tuning_name(self.name, optimizer),
                "workload": self.workload,
                "optimizer": optimizer,
                "search_space": space,
                "fixed": fixed,
                "n_trials": self.n_trials,
                "max_concurrent": self.max_concurrent,
                "sampler": self.sampler,
                "pruner": self.pruner,
                "direction": self.direction,
                "resources": self.resources.model_dump(),
                "seed": seed,
                "priority": self.priority,
            }
        )

    def evaluation_request(
        self, optimizer: str, best_params: dict[str, Any], seed: int
    ) -> StudyCreate:
        """The study that re-trains ``optimizer``'s best configuration ``seeds`` times.

        Every knob is a single choice, so each trial runs the same configuration; trials
        differ only by their seed, which the scheduler derives from the study's ``seed`` and
        the trial's number: every optimizer's evaluation uses the same list of seeds, none
        of them a tuning trial's.
        """
        fixed = {k: v for k, v in self.fixed.items() if self._applies(optimizer, k)}
        return StudyCreate.model_validate(
            {
                "name": evaluation_name(self.name, optimizer),
                "workload": self.workload,
                "optimizer": optimizer,
                "search_space": {k: {"choices": [v]} for k, v in best_params.items()},
                "fixed": fixed,
                "n_trials": self.seeds,
                "max_concurrent": self.max_concurrent,
                "sampler": "random",
                "pruner": "none",
                "direction": self.direction,
                "resources": self.resources.model_dump(),
                "seed": seed,
                "priority": self.priority,
            }
        )


ComparisonPhase = Literal["tuning", "evaluating", "done"]


class ComparisonStudyOut(BaseModel):
    """One of a comparison's studies, as ``GET /api/v1/studies/{id}`` shows it in full."""

    optimizer: str
    role: Literal["tune", "eval"]
    study_id: int
    name: str
    status: StudyStatusName
    counts: TrialCounts
    best_value: float | None


class EvaluationOut(BaseModel):
    """The best configuration's values over the evaluation seeds."""

    n: int
    values: list[float]
    seeds: list[int | None]
    mean: float | None
    std: float | None = Field(description="sample standard deviation (n - 1)")
    ci95: list[float] | None = Field(description="95% confidence interval of the mean (t)")


class OptimizerReport(BaseModel):
    optimizer: str
    best_tuned_value: float | None
    best_params: dict[str, Any] | None
    tuning_trials: int = Field(
        description="tuning trials the budget paid for (complete, pruned, or failed for good)"
    )
    best_so_far: list[float | None] = Field(
        description="best complete value after each tuning trial, in trial order"
    )
    evaluation: EvaluationOut | None
    scale_invariant_fraction: float | None = Field(
        description="mean share of multi-dimensional weights AdamP/SGDP projected"
    )
    weight_norms: list[float] | None = Field(
        description="L2 norm of the scale-invariant weights at start and after each epoch, "
        "mean over the evaluation seeds (workloads that report it)"
    )


class PairReport(BaseModel):
    """``a`` - ``b`` on the evaluation seeds, with its test."""

    a: str
    b: str
    difference: float | None = Field(description="mean of a minus mean of b")
    ci95: list[float] | None
    test: str = Field(description="the significance test used, by name")
    statistic: float | None
    p_value: float | None
    significant: bool
    better: str | None = Field(description="the better optimizer when significant")
    verdict: str
    trials_to_reach_other_best: dict[str, int | None] = Field(
        description="per optimizer: tuning trials it needed to match the other's best tuned "
        "value (None: never)"
    )
    weight_norm_ratio: float | None = Field(
        description="final weight norm of a over b's (evaluation means), when both report it"
    )


class ComparisonReport(BaseModel):
    metric: str | None
    direction: str
    final: bool = Field(description="false while parts are still running")
    optimizers: list[OptimizerReport]
    pairs: list[PairReport]
    verdict: str


class ComparisonOut(BaseModel):
    """A comparison: its request, where it stands, its studies, and its report."""

    id: int
    name: str
    owner: str
    workload: str
    metric: str | None
    optimizers: list[str]
    status: StudyStatusName
    phase: ComparisonPhase
    stop_reason: str | None
    error: str | None
    n_trials: int
    seeds: int
    seed: int
    sampler: str
    pruner: str
    direction: str
    max_concurrent: int
    priority: int
    resources: ResourcesOut
    fixed: dict[str, Any]
    studies: list[ComparisonStudyOut]
    report: ComparisonReport | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None
