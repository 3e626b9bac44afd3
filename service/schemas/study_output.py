"""What the API answers about studies and their trials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.schemas.common import StudyStatusName, TrialStateName


class ResourcesOut(BaseModel):
    gpus: float
    cpus: float


class TrialCounts(BaseModel):
    """Trials per Optuna state, in lower case, and the scheduler's own counts of them
    (``service.scheduler.ledger``: the same definitions the scheduler runs by)."""

    complete: int = 0
    running: int = 0
    waiting: int = 0
    pruned: int = 0
    fail: int = 0
    finished: int = Field(
        default=0, description="ended for good: complete, pruned, or failed and not re-run"
    )
    retried: int = Field(default=0, description="failed or preempted attempts that were re-run")


class IntermediateValue(BaseModel):
    step: int
    value: float | None


class NodeOut(BaseModel):
    node_id: str | None = None
    node_ip: str | None = None
    hostname: str | None = None
    pid: int | None = None


class TrialOut(BaseModel):
    """One trial: what was tried, what came out, where and how it ran."""

    number: int
    state: TrialStateName
    value: float | None
    params: dict[str, Any]
    intermediate_values: list[IntermediateValue]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration_s: float | None
    node: NodeOut | None
    gpu_ids: list[str]
    cuda_visible_devices: str | None = Field(
        default=None, description="CUDA_VISIBLE_DEVICES as Ray set it for the trial"
    )
    device: str | None
    attempts: int = Field(description="runs of this configuration so far, this one included")
    retry_of: int | None = Field(description="the trial number this one re-runs")
    scale_invariant_fraction: float | None = Field(
        description="fraction of multi-dimensional weights AdamP/SGDP projected (last step)"
    )
    stop_reason: str | None = None
    error: str | None = None


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]


class StudyOut(BaseModel):
    """A study as the API shows it: its request, status, progress and best result."""

    id: int
    name: str
    owner: str
    workload: str
    metric: str | None
    optimizer: str
    direction: str
    sampler: str
    pruner: str
    status: StudyStatusName
    stop_reason: str | None
    error: str | None
    n_trials: int
    max_concurrent: int
    timeout_s: float | None
    priority: int
    seed: int | None
    resources: ResourcesOut
    search_space: dict[str, Any]
    fixed: dict[str, Any]
    counts: TrialCounts
    best_trial: BestTrial | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None = Field(description="seconds since start, or start to finish")
    optuna_study_name: str


class ImportanceOut(BaseModel):
    study_id: int
    importances: dict[str, float]
    n_complete: int
    n_used: int = Field(description="complete trials fANOVA was fitted on (the latest ones)")
    evaluator: str
    note: str | None = None
    stale: bool = Field(
        default=False, description="computed before the latest trials: recomputed soon"
    )
    age_s: float = Field(default=0.0, description="seconds since it was computed")
