"""What every path of AdamP and SGDP shares: the compute dtype, reusable CPU memory, and the
scalar formulas (decay factors, bias corrections, Adam's step scales), each written once.

The paths (``_single_tensor``, ``_foreach``, ``_cpu``, ``_fused``) take these numbers from
here, so they cannot drift apart: a change of formula is a change in one function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, overload

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Parameter dtypes whose update math runs in float32 (state kept in float32 too)."""

Decay = tuple[float, float]
"""Decoupled decay factors ``(plain, projected)``: a weight is multiplied by one of them."""

Scratch = dict[tuple[torch.device, torch.dtype], Tensor]
"""Reusable memory for per-tensor steps on the CPU, one buffer per device and dtype."""


class AdamPOptions(NamedTuple):
    """AdamP's hyperparameters for one step, as every path takes them (their meaning:
    ``adamp.functional.adamp``)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    delta: float
    wd_ratio: float
    nesterov: bool
    maximize: bool
    capturable: bool

    def decay(self) -> Decay | None:
        """The decay factors ``(plain, projected)``, or ``None`` without weight decay."""
        return decay_factors(self.lr, self.weight_decay, self.wd_ratio)


class SGDPOptions(NamedTuple):
    """SGDP's hyperparameters for one step, as every path takes them (their meaning:
    ``adamp.functional.sgdp``)."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    eps: float
    delta: float
    wd_ratio: float
    maximize: bool

    def decay(self) -> Decay | None:
        """The decay factors ``(plain, projected)``, divided by ``1 - momentum``."""
        return decay_factors(self.lr, self.weight_decay, self.wd_ratio, self.momentum)


def compute_dtype(param: Tensor) -> torch.dtype:
    """The dtype the update math and the optimizer state use for ``param``."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def to_compute(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Float32 copies of fp16/bf16 tensors; other tensors as they are."""
    return [t.float() if t.dtype in LOW_PRECISION else t for t in tensors]


def compute_inputs(
    params: Sequence[Tensor], grads: Sequence[Tensor], maximize: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """The weights and gradients the math runs on: in the compute dtype (float32 copies of
    fp16/bf16 parameters, their gradients converted to match), gradients negated when
    maximizing."""
    ws = to_compute(params)
    gs = [g.to(w.dtype) for g, w in zip(grads, ws, strict=True)]
    if maximize:
        gs = list(torch._foreach_neg(gs))
    return ws, gs


def write_back(params: Sequence[Tensor], computed: Sequence[Tensor]) -> None:
    """Copy float32 results back into fp16/bf16 parameters (rounding once, at the end)."""
    for p, c in zip(params, computed, strict=True):
        if p is not c:
            p.copy_(c)


def group_by_device_and_dtype(params: Sequence[Tensor]) -> dict[tuple[Any, ...], list[int]]:
    """Indices of ``params`` grouped by (device, dtype): one multi-tensor launch per group."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    return groups


def scratch_like(scratch: Scratch | None, param: Tensor) -> Tensor | None:
    """Memory of ``param``'s size and compute dtype for a per-tensor step on the CPU.

    On a CPU a fresh parameter-sized buffer costs as much as the arithmetic of a step, so
    the buffer is kept in ``scratch`` (grown to the largest parameter) from step to step.
    ``None`` off the CPU, where allocators cache freed memory themselves, or without a
    ``scratch`` to keep it in.
    """
    if scratch is None or param.device.type != "cpu":
        return None
    dtype = compute_dtype(param)
    key = (param.device, dtype)
    buffer = scratch.get(key)
    if buffer is None or buffer.numel() < param.numel():
        buffer = scratch[key] = torch.empty(param.numel(), dtype=dtype, device=param.device)
    return buffer[: param.numel()].view(param.shape)


def decay_factors(
    lr: float, weight_decay: float, wd_ratio: float, momentum: float = 0.0
) -> Decay | None:
    """The decoupled decay factors ``(plain, projected)``; ``None`` without weight decay.

    ``w <- w (1 - lr wd r / (1 - momentum))`` with ``r = 1`` for a weight the step did not
    project and ``r = wd_ratio`` for one it did. AdamP passes no momentum; SGDP passes its
    own, so that its decoupled decay is as strong as plain SGD's coupled decay, whose
    gradient term the momentum amplifies by ``1 / (1 - momentum)``. (Dividing by
    ``1 - 0`` is exact: AdamP's factors are ``1 - lr wd r`` to the last bit.)
    """
    if not weight_decay > 0:
        return None
    return (
        1 - lr * weight_decay / (1 - momentum),
        1 - lr * weight_decay * wd_ratio / (1 - momentum),
    )


def factor_per_weight(codes: Tensor, decay: Decay, dtype: torch.dtype) -> Tensor:
    """Per weight, ``decay[1]`` where the weight was projected (code > 0), else ``decay[0]``:
    chosen on the device, without reading the codes."""
    plain = torch.full(codes.shape, decay[0], dtype=dtype, device=codes.device)
    projected = torch.full(codes.shape, decay[1], dtype=dtype, device=codes.device)
    return torch.where(codes > 0, projected, plain)


@overload
def bias_correction(beta: float, step: float) -> float: ...
@overload
def bias_correction(beta: float, step: Tensor) -> Tensor: ...
def bias_correction(beta: float, step: float | Tensor) -> float | Tensor:
    """``1 - beta**t``: in double precision on the host for a step count read there, and as
    ``-expm1(t log beta)`` for a step-count tensor (on the device, no sync).

    The direct form cancels catastrophically in float32 when ``beta**t`` is close to 1
    (``beta2 = 0.999`` at the first steps: off by about 1e-5 relative), and the device paths
    would not give the host paths' numbers; the ``expm1`` form is accurate to a few ulps of
    the step count's dtype. A tensor ``step`` is left as it is.
    """
    if not isinstance(step, Tensor):
        correction: float = 1 - beta**step  # float ** float is typed Any
        return correction
    if beta == 0:
        return torch.ones_like(step)  # 1 - 0**t for t >= 1
    return torch.expm1(step * math.log(beta)).neg_()


@overload
def adam_scales(lr: float, beta1: float, beta2: float, step: float) -> tuple[float, float]: ...
@overload
def adam_scales(lr: float, beta1: float, beta2: float, step: Tensor) -> tuple[Tensor, Tensor]: ...
def adam_scales(
    lr: float, beta1: float, beta2: float, step: float | Tensor
) -> tuple[float, float] | tuple[Tensor, Tensor]:
    """AdamP's bias corrections as the step takes them: ``(lr / (1 - beta1^t),
    sqrt(1 - beta2^t))``, the step size and the divisor of ``sqrt(v)``, so that the update is
    ``step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``."""
    if isinstance(step, Tensor):
        return lr / bias_correction(beta1, step), bias_correction(beta2, step).sqrt()
    return lr / bias_correction(beta1, step), math.sqrt(bias_correction(beta2, step))
