"""The messages between the scheduler and a worker: what to run, where it ran, what happened.

Plain frozen dataclasses with no torch (nor Ray) behind them, so that the service's side
(scheduler, API) can build and read them without importing the training stack; the worker's
side (``workers.runner``) imports them too and adds what needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs to run one trial; sent by the scheduler."""

    study_id: int
    trial_number: int
    workload: str
    optimizer: str
    knobs: dict[str, Any]
    args: dict[str, Any]
    seed: int
    num_cpus: float = 1.0
    checkpoint_url: str | None = None
    """Root of the checkpoint store (an fsspec URL); ``None``: checkpointing is off."""
    lineage: int | None = None
    """The first attempt's trial number when this is a re-run (its checkpoints are kept
    under that number); ``None``: ``trial_number``."""


@dataclass(frozen=True)
class Placement:
    """Where a trial runs: the Ray node, the process and the GPUs it was given.

    Which torch device that means is decided on the worker (``workers.runner.device_of``),
    where CUDA's availability can be asked.
    """

    node_id: str
    node_ip: str
    hostname: str
    pid: int
    gpu_ids: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None


@dataclass(frozen=True)
class Started:
    """First event of every trial: where it runs and on which device (``cpu``/``cuda``)."""

    placement: Placement
    device: str


@dataclass(frozen=True)
class Report:
    """One intermediate value of a trial, as sent to the scheduler."""

    step: int
    value: float
    elapsed_s: float
    scale_invariant_fraction: float | None = None


@dataclass(frozen=True)
class Resumed:
    """The trial continues from a checkpoint saved after ``step`` by an earlier attempt;
    sent before its first report, so the scheduler can carry the earlier values over."""

    step: int


@dataclass(frozen=True)
class Finished:
    """Last event of a successful trial: its final metric."""

    value: float
    duration_s: float
    steps: int
    scale_invariant_fraction: float | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    """Stored on the trial: the workload's own (``TrialContext.set_user_attr``) and its
    ``seed``, so a result can be reproduced and paired with another optimizer's."""


TrialEvent = Started | Resumed | Report | Finished
