"""The readable per-tensor AdamP and SGDP steps: the reference the other paths are tested against.

Each function steps a list of parameters one at a time, over plain tensor lists (the state
tensors of parameter ``i`` at index ``i`` of each list), in the order the math is written in
``adamp.functional``. Nothing here reads a device value: the scale-invariance test is a
device tensor that selects between candidates (``adamp._projection``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from adamp._common import (
    AdamPOptions,
    Scratch,
    SGDPOptions,
    adam_scales,
    compute_inputs,
    factor_per_weight,
    scratch_like,
    write_back,
)
from adamp._projection import project_one_, scale_invariance_one


def single_tensor_adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: AdamPOptions,
    scratch: Scratch | None,
) -> None:
    """AdamP, one parameter at a time.

    Two passes are saved against the formula as written: ``1 / sqrt(1 - beta2^t)`` moves
    from the denominator into the step size (``eps`` scaled to match), and the projection
    joins the weight update, ``w <- w * (r + s c) - s u``, which is ``w * r - s * (u - c w)``.
    The update is written into ``scratch`` memory where there is some (see
    ``adamp._common.scratch_like``).
    """
    decay = o.decay()
    for i, param in enumerate(params):
        (w,), (g,) = compute_inputs([param], [grads[i]], o.maximize)
        exp_avg, exp_avg_sq, step = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step += 1

        exp_avg.lerp_(g, 1 - o.beta1)  # beta1 * m + (1 - beta1) * g in one pass
        exp_avg_sq.mul_(o.beta2).addcmul_(g, g, value=1 - o.beta2)
        buffer = scratch_like(scratch, param)
        denom = exp_avg_sq.sqrt() if buffer is None else torch.sqrt(exp_avg_sq, out=buffer)
        step_size: float | Tensor
        if o.capturable or step.device.type != "cpu":
            # The step count in the compute dtype, still on the device.
            step_size, sqrt_bc2 = adam_scales(o.lr, o.beta1, o.beta2, step.to(w.dtype))
            denom.div_(sqrt_bc2).add_(o.eps)
        else:  # the step count lives on the CPU: reading it waits for no device
            # m / (sqrt(v) / c + eps) = c * m / (sqrt(v) + eps * c), with c = sqrt(1 - beta2^t)
            size, correction2 = adam_scales(o.lr, o.beta1, o.beta2, step.item())
            denom.add_(o.eps * correction2)
            step_size = size * correction2
        numerator = o.beta1 * exp_avg + (1 - o.beta1) * g if o.nesterov else exp_avg
        update = torch.div(numerator, denom, out=denom)

        if param.dim() > 1:
            coef, code = scale_invariance_one(w, g, update, o.delta, o.eps)
            projections[i].copy_(code)
            factor = coef.mul_(step_size)
            factor.add_(1 if decay is None else factor_per_weight(code, decay, w.dtype))
            w.mul_(factor.view([-1] + [1] * (w.dim() - 1)))
        elif decay is not None:
            w.mul_(decay[0])

        if isinstance(step_size, Tensor):
            w.sub_(update.mul_(step_size))
        else:
            w.add_(update, alpha=-step_size)
        write_back([param], [w])


def single_tensor_sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: SGDPOptions,
    scratch: Scratch | None,
) -> None:
    """SGDP, one parameter at a time (``scratch``: not needed here)."""
    decay = o.decay()
    for i, param in enumerate(params):
        (w,), (g,) = compute_inputs([param], [grads[i]], o.maximize)
        buf = momentum_buffers[i]
        buf.mul_(o.momentum).add_(g, alpha=1 - o.dampening)
        update = g + o.momentum * buf if o.nesterov else buf

        if param.dim() > 1:
            code = project_one_(w, g, update, o.delta, o.eps)
            projections[i].copy_(code)
            if decay is not None:
                w.mul_(factor_per_weight(code, decay, w.dtype))
        elif decay is not None:
            w.mul_(decay[0])
        w.add_(update, alpha=-o.lr)
        write_back([param], [w])
