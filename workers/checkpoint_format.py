"""The checkpoint file: ``torch.save`` of ``{"format": 1, "step": k, "state": ...}``.

``step`` is the last step the trial reported before saving, so a resumed attempt reports
from ``k + 1``; ``state`` is what the workload passed to ``ctx.save_checkpoint``. The
store (``workers.checkpoints``) only moves these bytes and needs no torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """What a lineage saved last: the step it was saved after, and the saved object."""

    step: int
    state: Any


def encode(step: int, state: Any) -> bytes:
    """The bytes of a checkpoint file (``torch.save``, so tensors keep dtype and device)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "step": int(step), "state": state}, buffer)
    return buffer.getvalue()


def decode(data: bytes, *, weights_only: bool = True) -> Checkpoint:
    """Read a checkpoint file. ``weights_only`` (the default) loads tensors, state dicts
    and plain Python containers without running arbitrary pickled code."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not an adamp-tune checkpoint file")
    return Checkpoint(int(payload["step"]), payload["state"])
