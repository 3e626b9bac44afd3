"""What the scheduler tracks of each study it drives and each trial it runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna

from db.models import utcnow
from service.cluster import Outcome
from service.scheduler.ledger import Counts
from service.study_spec import StudySpec
from workers.messages import TrialRequest


class DrivenStudy(optuna.Study):
    """An Optuna study driven by the scheduler, which knows how many re-runs wait in it.

    Optuna's ``ask`` first looks for an enqueued trial to hand out, a read of every
    unfinished trial of the study from the database; the scheduler enqueues every re-run
    itself and its ledger counts them (``Counts.waiting``), so while none waits that read
    is skipped (a third of the loop's time per trial in the bookkeeping benchmark)."""

    def __init__(
        self,
        *,
        study_name: str,
        storage: optuna.storages.BaseStorage,
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner,
        waiting: Callable[[], int],
    ) -> None:
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self._waiting = waiting

    def _pop_waiting_trial_id(self) -> int | None:
        if self._waiting() == 0:
            return None
        return super()._pop_waiting_trial_id()


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
