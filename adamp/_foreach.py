"""The multi-tensor AdamP and SGDP steps: ``torch._foreach_*`` kernels over parameters of one
device and dtype, and the projection of all their weights in a fixed number of kernels.

The default on GPUs without Triton (a few dozen launches per step whatever the number of
parameters), and the fallback of the fused path for tensors it cannot address. Nothing here
reads a device value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from adamp._common import (
    AdamPOptions,
    Decay,
    Scratch,
    SGDPOptions,
    adam_scales,
    compute_inputs,
    factor_per_weight,
    write_back,
)
from adamp._projection import project_many_


def multi_tensor_adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: AdamPOptions,
    scratch: Scratch | None,
) -> None:
    """AdamP over parameters of one device and dtype (``scratch``: not needed here)."""
    ws, gs = compute_inputs(params, grads, o.maximize)
    exp_avgs, exp_avg_sqs, steps = list(exp_avgs), list(exp_avg_sqs), list(state_steps)
    torch._foreach_add_(steps, 1)

    torch._foreach_lerp_(exp_avgs, gs, 1 - o.beta1)
    torch._foreach_mul_(exp_avg_sqs, o.beta2)
    torch._foreach_addcmul_(exp_avg_sqs, gs, gs, value=1 - o.beta2)

    denoms = list(torch._foreach_sqrt(exp_avg_sqs))
    step_sizes: list[float] | list[Tensor]
    if o.capturable or steps[0].device.type != "cpu":
        # Step counts in the compute dtype (float64 parameters keep float64 precision).
        counts = torch.stack(steps).to(ws[0].dtype)
        sizes, sqrt_bc2 = adam_scales(o.lr, o.beta1, o.beta2, counts)
        torch._foreach_div_(denoms, list(sqrt_bc2.unbind()))
        step_sizes = list(sizes.unbind())
    else:  # CPU step counts: reading them waits for no device
        scales = [adam_scales(o.lr, o.beta1, o.beta2, t.item()) for t in steps]
        torch._foreach_div_(denoms, [correction2 for _, correction2 in scales])
        step_sizes = [size for size, _ in scales]
    torch._foreach_add_(denoms, o.eps)

    if o.nesterov:
        updates = list(torch._foreach_mul(exp_avgs, o.beta1))
        torch._foreach_add_(updates, gs, alpha=1 - o.beta1)
        torch._foreach_div_(updates, denoms)
    else:  # divide into the denominators' memory: one large temporary fewer
        torch._foreach_reciprocal_(denoms)
        torch._foreach_mul_(denoms, exp_avgs)
        updates = denoms

    project_and_decay_(ws, gs, updates, projections, o.delta, o.eps, o.decay())
    apply_updates_(ws, updates, step_sizes)
    write_back(params, ws)


def multi_tensor_sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: SGDPOptions,
    scratch: Scratch | None,
) -> None:
    """SGDP over parameters of one device and dtype (``scratch``: not needed here)."""
    ws, gs = compute_inputs(params, grads, o.maximize)
    bufs = list(momentum_buffers)
    torch._foreach_mul_(bufs, o.momentum)
    torch._foreach_add_(bufs, gs, alpha=1 - o.dampening)
    updates = list(torch._foreach_add(gs, bufs, alpha=o.momentum)) if o.nesterov else bufs

    project_and_decay_(ws, gs, updates, projections, o.delta, o.eps, o.decay())
    apply_updates_(ws, updates, [float(o.lr)] * len(ws))
    write_back(params, ws)


def project_and_decay_(
    ws: Sequence[Tensor],
    gs: Sequence[Tensor],
    updates: Sequence[Tensor],
    projections: Sequence[Tensor],
    delta: float,
    eps: float,
    decay: Decay | None,
) -> None:
    """Project the updates of the multi-dimensional weights, record their codes in
    ``projections``, and multiply every weight by its decay factor ``(plain, projected)``."""
    multi = [i for i, w in enumerate(ws) if w.dim() > 1]
    flat = [i for i, w in enumerate(ws) if w.dim() <= 1]
    if multi:
        multi_ws = [ws[i] for i in multi]
        codes = project_many_(
            multi_ws, [gs[i] for i in multi], [updates[i] for i in multi], delta, eps
        )
        torch._foreach_copy_([projections[i] for i in multi], list(codes.unbind()))
        if decay is not None:
            factors = factor_per_weight(codes, decay, multi_ws[0].dtype)
            torch._foreach_mul_(multi_ws, list(factors.unbind()))
    if flat and decay is not None:
        torch._foreach_mul_([ws[i] for i in flat], decay[0])


def apply_updates_(
    ws: Sequence[Tensor], updates: Sequence[Tensor], step_sizes: Sequence[float] | Sequence[Tensor]
) -> None:
    """``w <- w - step_size * update`` for each weight, in as few kernels as the sizes allow."""
    first = step_sizes[0]
    if isinstance(first, float) and all(s == first for s in step_sizes):
        torch._foreach_add_(list(ws), list(updates), alpha=-first)
        return
    sizes: list[Any] = list(step_sizes)  # per-tensor floats, or 0-dim device tensors
    torch._foreach_mul_(list(updates), sizes)
    torch._foreach_sub_(list(ws), list(updates))
