"""What the scheduler tracks of each study it drives and each trial it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna

from db.models import utcnow
from service.cluster import Outcome
from service.scheduler.ledger import Counts
from service.study_spec import StudySpec
from workers.messages import TrialRequest


@dataclass
class RunningTrial:
    """A trial on the cluster, as the scheduler tracks it."""

    study_id: int
    trial: optuna.Trial
    handle: Any
    request: TrialRequest
    attempt: int
    cpus: float
    gpus: float
    preemptions: int = 0
    """How many times this configuration was preempted before this attempt."""
    stop_reason: str | None = None
    last_sif: float | None = None
    pending: Outcome | None = None
    """An outcome taken from the cluster and not yet recorded."""
    stop_asked: float | None = None
    """When it was asked to stop (monotonic), for the forced stop after ``STOP_GRACE_S``."""
    forced: bool = False
    started: float = field(default_factory=time.monotonic)


@dataclass
class ActiveStudy:
    """A queued or running study this scheduler drives."""

    id: int
    name: str
    owner: str
    spec: StudySpec
    study: optuna.Study
    distributions: dict[str, Any]
    status: str
    started_at: datetime | None
    priority: int
    max_concurrent: int
    created_at: datetime
    counts: Counts
    """Read-only here: the ledger (``service.scheduler.ledger``) is its only writer."""
    draining: str | None = None
    """Why no more trials start (``timeout``, ``cancelled``, ``failed``, ``shutdown``)."""
    last_error: str | None = None

    @property
    def target(self) -> int:
        """Trials to finish: ``n_trials``, or fewer when a grid has fewer points (a grid
        point is never asked for twice, even while another trial still runs it)."""
        return self.spec.target

    @property
    def timed_out(self) -> bool:
        timeout = self.spec.timeout_s
        return (
            timeout is not None
            and self.started_at is not None
            and utcnow() >= self.started_at + timedelta(seconds=timeout)
        )

    @property
    def prunes(self) -> bool:
        return self.spec.pruner != "none"
