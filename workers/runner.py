"""The trial runner: runs one trial of a workload and streams what happens as events.

``run_trial`` is a plain generator, tested without Ray; ``workers.remote`` wraps it in a
Ray streaming task. The workload runs in a thread of its own so that it can report through
a callback while this generator yields the reports to the scheduler as they come. When the
consumer stops the generator (Ray's cancel raises ``KeyboardInterrupt`` in the task, or the
generator is closed), the workload is told to stop and this generator waits for it, so a
stopped trial never keeps training in the background: it ends at its next report.
"""

from __future__ import annotations

import math
import queue
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from workers.checkpoints import CheckpointStore
from workers.context import TrialContext, TrialStopped
from workers.messages import (
    Finished,
    Placement,
    Report,
    Resumed,
    Started,
    TrialEvent,
    TrialRequest,
)
from workers.registry import UnknownWorkload, get_workload


def device_of(placement: Placement) -> str:
    """``cuda`` when GPUs were assigned and CUDA is usable here, else ``cpu``."""
    return "cuda" if placement.gpu_ids and torch.cuda.is_available() else "cpu"


@dataclass
class _Outcome:
    value: float | None = None
    error: BaseException | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a trial is reproducible from its seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_trial(
    request: TrialRequest, placement: Placement, *, poll_s: float = 0.2
) -> Iterator[TrialEvent]:
    """Run ``request``'s workload and yield ``Started``, then ``Resumed`` if it continues
    from a checkpoint, then each ``Report``, then ``Finished``.

    An exception raised by the workload is re-raised here, so the scheduler sees the
    workload's own error. A workload that returns no value finishes with its last report.
    A workload not installed where the trial runs fails it at once with ``UnknownWorkload``,
    naming the workload, the host and the Python environment that lack it.
    """
    try:
        workload = get_workload(request.workload)
    except UnknownWorkload as err:
        where = f"on {placement.hostname} (Python {sys.executable})"
        raise UnknownWorkload(err.name, err.installed, where) from None
    device = device_of(placement)
    yield Started(placement, device)

    events: queue.Queue[Report | Resumed | None] = queue.Queue()  # None: the workload has returned
    ctx = TrialContext(
        optimizer_name=request.optimizer,
        knobs=dict(request.knobs),
        args=dict(request.args),
        seed=request.seed,
        device=torch.device(device),
        emit=events.put,
        checkpoints=CheckpointStore(request.checkpoint_url) if request.checkpoint_url else None,
        study_id=request.study_id,
        lineage=request.trial_number if request.lineage is None else request.lineage,
    )
    outcome = _Outcome()

    def target() -> None:
        try:
            torch.set_num_threads(max(1, int(request.num_cpus)))
            seed_everything(request.seed)
            result = workload.train(ctx)
            outcome.value = ctx.last_value if result is None else float(result)
        except BaseException as err:  # handed to the generator, which re-raises it
            outcome.error = err
        finally:
            events.put(None)  # wakes the loop below at once

    thread = threading.Thread(target=target, name=f"trial-{request.trial_number}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                event = events.get(timeout=poll_s)
            except queue.Empty:  # a periodic wake-up keeps the generator cancellable
                continue
            if event is None:
                break
            yield event
    finally:
        # Reached on normal completion, on close() and on Ray's cancel alike.
        ctx.stop_event.set()
        thread.join()

    if outcome.error is not None:
        if isinstance(outcome.error, TrialStopped):
            return
        raise outcome.error
    if outcome.value is None:
        raise ValueError(f"workload {request.workload!r} returned no value and reported none")
    if not math.isfinite(outcome.value):
        raise ValueError(f"workload {request.workload!r} returned a non-finite value")
    yield Finished(
        value=outcome.value,
        duration_s=time.monotonic() - ctx.started_at,
        steps=ctx.last_step + 1,
        scale_invariant_fraction=ctx.scale_invariant_fraction(),
        user_attrs={**ctx.user_attrs, "seed": request.seed},
    )
