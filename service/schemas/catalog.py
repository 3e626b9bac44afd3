"""What the API answers about the service itself: workloads, optimizers, cluster, health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class WorkloadArgOut(BaseModel):
    kind: str
    default: Any
    help: str
    range: str


class WorkloadOut(BaseModel):
    name: str
    description: str
    metric: str
    direction: str
    args: dict[str, WorkloadArgOut]
    default_space: dict[str, dict[str, dict[str, Any]]]


class OptimizerOut(BaseModel):
    name: str
    description: str
    knobs: dict[str, WorkloadArgOut]


class ClusterNodeOut(BaseModel):
    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus_total: float
    gpus_total: float
    resources: dict[str, float]


class ClusterOut(BaseModel):
    nodes: list[ClusterNodeOut]
    cpus_total: float
    cpus_in_use: float
    gpus_total: float
    gpus_in_use: float
    running_trials: int
    queue_depth: int = Field(description="studies queued or running with trials still to start")
    queue_by_owner: dict[str, int]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    ray: bool = Field(description="connected, with at least one live node that has CPUs")
    scheduler: Literal["leader", "standby", "off", "starting"]
    version: str
    problems: list[str] = Field(default_factory=list, description="what is wrong, if anything")
