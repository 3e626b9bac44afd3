"""What a workload sees of its trial: the hyperparameters, a device, and a way to report.

A workload trains with ``ctx.build_optimizer(model.parameters())`` and calls
``ctx.report(value, step)`` after each epoch. A long trial saves its state after a report
with ``ctx.save_checkpoint(state)`` and, at its start, takes what an earlier attempt of
the same trial saved with ``ctx.load_checkpoint()`` (``None`` on a first run); a re-run
then continues at ``ctx.last_step + 1`` instead of starting over. The scheduler may stop
the trial after any report (the pruner, a cancelled study, a timeout): the next ``report``
then raises ``TrialStopped``, which the workload should let propagate.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.checkpoint_format import decode, encode
from workers.checkpoints import CheckpointStore
from workers.messages import Report, Resumed
from workers.optimizer_specs import OPTIMIZERS
from workers.optimizers import build_optimizer

MAX_USER_ATTRS = 16
MAX_USER_ATTR_BYTES = 16_384
"""A trial's own attributes are few and small: they travel in its last event and land in
Optuna's trial row."""


class TrialStopped(Exception):
    """Raised inside a workload when the scheduler has stopped its trial."""


@dataclass
class TrialContext:
    """The hyperparameters and services a workload gets for one trial."""

    optimizer_name: str
    knobs: dict[str, Any]
    args: dict[str, Any]
    seed: int
    device: torch.device
    emit: Callable[[Report | Resumed], None] = field(repr=False)
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    started_at: float = field(default_factory=time.monotonic, repr=False)
    last_value: float | None = None
    last_step: int = -1
    user_attrs: dict[str, Any] = field(default_factory=dict)
    """What the workload recorded with ``set_user_attr``; stored with the finished trial."""
    _optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)
    checkpoints: CheckpointStore | None = field(default=None, repr=False)
    """Where this trial's checkpoints go; ``None``: checkpointing is off (saves are
    dropped, loads find nothing)."""
    study_id: int = 0
    lineage: int = 0
    """The number of the first attempt of this trial: every re-run shares its checkpoint."""
    checkpoint_s: float = 0.0
    """Seconds spent saving checkpoints so far (the overhead the benchmark reports)."""

    def save_checkpoint(self, state: Any, step: int | None = None) -> None:
        """Keep ``state`` (a state dict, tensors, numbers, lists, dicts) as this trial's
        checkpoint, replacing the last one; call it after ``report(..., step)`` so that a
        re-run continues at the next step. ``step`` defaults to the last step reported.

        Raises ``CheckpointStoreError`` when the store is full or unreachable: the trial
        then fails and the scheduler runs it again.
        """
        if self.checkpoints is None:
            return
        started = time.monotonic()
        data = encode(self.last_step if step is None else step, state)
        self.checkpoints.save(self.study_id, self.lineage, data)
        self.checkpoint_s += time.monotonic() - started

    def load_checkpoint(self, *, weights_only: bool = True) -> Any:
        """What the last attempt of this trial saved, or ``None``; call it before the
        first report. Reports then continue from the step after the checkpoint's (the
        scheduler already holds the earlier ones). ``weights_only=False`` loads arbitrary
        pickled objects: only for a store nobody else writes to."""
        if self.checkpoints is None or self.last_step >= 0:
            return None
        data = self.checkpoints.load_bytes(self.study_id, self.lineage)
        if data is None:
            return None
        checkpoint = decode(data, weights_only=weights_only)
        if checkpoint.step >= 0:
            self.last_step = checkpoint.step
            self.emit(Resumed(checkpoint.step))
        return checkpoint.state

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The trial's optimizer over ``params``, with the knobs the sampler chose.

        The context keeps a reference so that each report can carry the fraction of weights
        AdamP/SGDP treated as scale-invariant at the last step.
        """
        self._optimizer = build_optimizer(self.optimizer_name, params, self.knobs)
        return self._optimizer

    def scale_invariant_fraction(self) -> float | None:
        """Fraction (by elements) of the multi-dimensional weights projected at the last step."""
        opt = self._optimizer
        if opt is None or not OPTIMIZERS[self.optimizer_name].projects:
            return None
        # One host sync per report (once per epoch), never inside the optimizer step.
        projecting: Any = opt  # adamp.AdamP / SGDP
        return float(projecting.scale_invariant_fraction().item())

    def set_user_attr(self, key: str, value: Any) -> None:
        """Record ``value`` (JSON: numbers, strings, lists) under ``key`` on the trial, as an
        Optuna user attribute once it finishes (e.g. ``weight_norms`` over training).

        At most ``MAX_USER_ATTRS`` keys of ``MAX_USER_ATTR_BYTES`` each, so a workload
        cannot bloat the trials table; a later call replaces the value.
        """
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ValueError("a user attribute's key is a string of 1 to 64 characters")
        if key not in self.user_attrs and len(self.user_attrs) >= MAX_USER_ATTRS:
            raise ValueError(f"at most {MAX_USER_ATTRS} user attributes per trial")
        size = len(json.dumps(value, allow_nan=False))
        if size > MAX_USER_ATTR_BYTES:
            raise ValueError(
                f"user attribute {key!r} is {size:,} bytes as JSON; at most {MAX_USER_ATTR_BYTES:,}"
            )
        self.user_attrs[key] = value

    def should_stop(self) -> bool:
        """Whether the scheduler stopped this trial; long epochs may poll it to stop sooner."""
        return self.stop_event.is_set()

    def report(self, value: float, step: int | None = None) -> None:
        """Send an intermediate ``value`` (e.g. validation accuracy after epoch ``step``).

        Raises ``TrialStopped`` if the scheduler has stopped the trial, and ``ValueError``
        for a value that is not a finite number (a diverged run fails its trial).
        """
        if self.stop_event.is_set():
            raise TrialStopped
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"the workload reported a non-finite value ({value}) at step {step}")
        step = self.last_step + 1 if step is None else int(step)
        if step <= self.last_step:
            raise ValueError(f"report steps must increase: got {step} after {self.last_step}")
        self.last_step, self.last_value = step, value
        elapsed = time.monotonic() - self.started_at
        self.emit(Report(step, value, elapsed, self.scale_invariant_fraction()))
