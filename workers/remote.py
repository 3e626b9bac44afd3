"""The Ray side of a trial: a thin streaming task around ``workers.runner.run_trial``.

Resources are chosen per call (``num_gpus`` may be fractional to pack small trials on one
GPU); Ray places the task on a node with room and sets ``CUDA_VISIBLE_DEVICES`` for it.
Ray's own retries are off: a trial that dies is retried by the scheduler as a new Optuna
trial with the same parameters, so no report is ever counted twice.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import ray

from workers.messages import Placement, TrialEvent, TrialRequest


def current_placement() -> Placement:
    """Where the calling Ray task runs."""
    ctx = ray.get_runtime_context()
    gpu_ids = ctx.get_accelerator_ids().get("GPU", [])
    return Placement(
        node_id=ctx.get_node_id(),
        node_ip=ray.util.get_node_ip_address(),
        hostname=socket.gethostname(),
        pid=os.getpid(),
        gpu_ids=tuple(str(g) for g in gpu_ids),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def _trial_task(request: TrialRequest) -> Iterator[TrialEvent]:
    # Imported here, on the worker: the scheduler submits trials through this module, and
    # importing torch on its loop (several seconds on a loaded machine, at the first
    # trial) once held the loop past its lease, so a standby took the scheduler over.
    from workers.runner import run_trial  # noqa: PLC0415

    yield from run_trial(request, current_placement())


_remote_trial = ray.remote(_trial_task)


def submit_trial(
    request: TrialRequest,
    *,
    num_cpus: float,
    num_gpus: float,
    resources: dict[str, float] | None = None,
) -> Any:
    """Start ``request`` on the cluster; returns Ray's ``ObjectRefGenerator`` of its events."""
    return _remote_trial.options(
        num_returns="streaming",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources or {},
        max_retries=0,
        name=f"trial:{request.study_id}:{request.trial_number}",
    ).remote(request)
