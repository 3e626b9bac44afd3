"""AdamP and SGDP steps on the CPU built on torch's fused CPU optimizer kernels.

On a CPU an optimizer step is bound by memory traffic: every pass over a parameter-sized
tensor costs about as much as the arithmetic of the whole step. The plain per-tensor path
(``foreach=False``, the readable reference) makes about 27 such reads and writes per
element for an AdamP step on a weight; the reference release more. This path, the default
for float32 and float64 CPU parameters when neither ``foreach`` nor ``fused`` is set, makes
17 (15 for a weight the scale-invariance test does not flag):

* **AdamP.** torch's fused Adam kernel (``torch._fused_adam_``, what
  ``torch.optim.Adam(fused=True)`` runs) updates both moments and writes the step
  ``-s u`` (``s = lr / (1 - beta1^t)``, ``u = m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``)
  into a zeroed scratch buffer, in one pass. The row statistics of the scale-invariance
  test follow (``adamp._projection``; ``<w, u>`` only where a view passed, per row for the
  channel view, as one dot for the layer view), then one pass updates the weight:
  ``w <- w (r + s c) - s u``, which is ``w r - s (u - c w)``, the projected update with
  the decay factor ``r``. One-dimensional parameters are never projected and take torch's
  fused AdamW kernel (its decoupled decay is AdamP's) directly.
* **SGDP.** The momentum update is one pass when there is no dampening
  (``b <- g + mu b``; a second pass negates it under ``maximize``), the projection of the
  update is skipped for weights the test did not flag, and the decayed weight update
  ``w <- f w - lr u`` is one pass (torch's fused SGD kernel with its weight decay set to
  ``(1 - f) / lr``).

On the CPU reading a 0-dim tensor (``.item()``) does not wait for any device, so the
decision may steer Python here. The numbers are those of the per-tensor path up to
rounding. The functions step only what ``takes`` accepts; ``adamp.functional`` sends the
rest (tensors not contiguous, a gradient of another dtype than its float32 or float64
parameter) and AdamP's ``nesterov`` to the per-tensor path. fp16/bf16 parameters are
stepped as float32 copies and rounded once, as on the other paths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from adamp._common import (
    LOW_PRECISION,
    AdamPOptions,
    Scratch,
    SGDPOptions,
    compute_dtype,
    compute_inputs,
    scratch_like,
    write_back,
)
from adamp._projection import (
    CHANNEL_VIEW,
    LAYER_VIEW,
    as_rows,
    radial_coefficient,
    row_dot,
    view_codes,
    which_view,
)

CPU_DTYPES = (torch.float32, torch.float64)
"""Dtypes the math runs in here: fp16/bf16 parameters are stepped as float32 copies (their
state is float32 already), then rounded once, as on the other paths."""


@functools.cache
def cpu_kernels_available() -> bool:
    """True when this torch runs the fused Adam, AdamW and SGD kernels on CPU tensors.

    Probed once on one-element tensors: the kernels are private, their CPU versions came
    in torch 2.4 and 2.5, and a torch without them must fall back to the plain path rather
    than fail in ``step()``.
    """
    one = [torch.ones(1)]
    try:
        with torch.no_grad():
            for kernel in (torch._fused_adam_, torch._fused_adamw_):
                kernel(
                    [torch.zeros(1)], one, [torch.zeros(1)], [torch.zeros(1)], [],
                    [torch.ones(())], lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0,
                    eps=1e-8, amsgrad=False, maximize=False,
                )  # fmt: skip
            torch._fused_sgd_(
                [torch.zeros(1)], one, [], weight_decay=0.1, momentum=0.0, lr=0.1,
                dampening=0.0, nesterov=False, maximize=False, is_first_step=False,
            )  # fmt: skip
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


def takes(param: Tensor, grad: Tensor, buffers: Sequence[Tensor], step: Tensor | None) -> bool:
    """True when the fused kernels can step ``param``: a contiguous CPU tensor of a dtype
    they run in (fp16/bf16 stepped as float32 copies), whose gradient and state buffers are
    contiguous, of its shape and its compute dtype (the kernels walk all of them in memory
    order), and whose step count, if it has one, is a float32 CPU tensor."""
    dtype = compute_dtype(param)
    grad_dtype = torch.float32 if param.dtype in LOW_PRECISION else grad.dtype
    return (
        param.device.type == "cpu"
        and dtype in CPU_DTYPES
        and param.is_contiguous()
        and not grad.is_sparse
        and grad_dtype == dtype
        and grad.shape == param.shape
        and grad.is_contiguous()
        and all(t.dtype == dtype and t.shape == param.shape and t.is_contiguous() for t in buffers)
        and (step is None or (step.device.type == "cpu" and step.dtype == torch.float32))
    )


def _scratch(scratch: Scratch | None, param: Tensor) -> Tensor:
    """The update's memory: kept between steps in ``scratch`` when given (see
    ``adamp._common.scratch_like``), else fresh."""
    buffer = scratch_like(scratch, param)
    if buffer is None:
        return torch.empty(param.shape, dtype=compute_dtype(param), device=param.device)
    return buffer


def _row_view(factor: Tensor, weight: Tensor) -> Tensor:
    return factor.view([-1] + [1] * (weight.dim() - 1))


def _adam_kernel(
    kernel: Callable[..., None],
    target: Tensor,
    *,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    lr: float,
    weight_decay: float,
    beta1: float,
    beta2: float,
    eps: float,
    maximize: bool,
) -> None:
    """``target <- target * (1 - lr wd) - s u`` (``_fused_adamw_``) or, with
    ``_fused_adam_`` and no decay, ``target <- target - s u``, updating both moments."""
    kernel(
        [target], [grad], [exp_avg], [exp_avg_sq], [], [step], lr=lr, beta1=beta1,
        beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=maximize,
    )  # fmt: skip


def _projection_coefficients(
    weight: Tensor, grad: Tensor, update: Tensor, delta: float, eps: float
) -> tuple[Tensor | None, Tensor]:
    """``scale_invariance_one`` with the work after the test done only where it is needed:
    the per-row ``<w_i, u_i>`` only for the channel view, one flat dot for the layer view,
    nothing for a weight neither view takes (``None``). On the CPU the test's answer costs
    nothing to read, and the row dots are the dearest pass of the step (a product written
    to memory, then summed)."""
    w, u = as_rows(weight), as_rows(update)
    channel, layer, w_w = which_view(w, as_rows(grad), delta, eps)
    code = view_codes(channel, layer)
    view = int(code.item())
    if view == CHANNEL_VIEW:
        return radial_coefficient(row_dot(w, u), w_w, eps), code
    if view == LAYER_VIEW:
        total = torch.dot(w.reshape(-1), u.reshape(-1))
        return radial_coefficient(total, w_w.sum(), eps).expand(w.shape[0]), code
    return None, code


def cpu_adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: AdamPOptions,
    scratch: Scratch | None,
) -> None:
    """AdamP, one parameter at a time, each one that ``takes`` accepts (see the module
    docstring). Not for ``nesterov`` (``adamp.functional`` sends those steps elsewhere);
    the step counts are on the CPU whatever ``capturable`` says, with the parameters."""
    decay = o.decay()
    plain, projected = (1.0, 1.0) if decay is None else decay
    for i, param in enumerate(params):
        (w,), (g,) = compute_inputs([param], [grads[i]], maximize=False)  # the kernel negates
        state_steps[i].add_(1)
        adam = functools.partial(
            _adam_kernel, grad=g, exp_avg=exp_avgs[i], exp_avg_sq=exp_avg_sqs[i],
            step=state_steps[i], lr=o.lr, beta1=o.beta1, beta2=o.beta2, eps=o.eps,
            maximize=o.maximize,
        )  # fmt: skip
        if param.dim() <= 1:
            # Never projected: AdamW's step, whose decoupled decay (1 - lr wd, computed by
            # the kernel) is AdamP's unprojected one, decay_factors(...)[0].
            adam(torch._fused_adamw_, w, weight_decay=o.weight_decay if decay else 0.0)
            write_back([param], [w])
            continue

        update = _scratch(scratch, param).zero_()
        adam(torch._fused_adam_, update, weight_decay=0.0)
        # update = -s u; the test's coefficient of that update is -s c (|cos| ignores the
        # gradient's sign, so maximize needs nothing more here).
        neg_coef, code = _projection_coefficients(w, g, update, o.delta, o.eps)
        projections[i].copy_(code)
        if neg_coef is None:  # not projected: w r - s u
            torch.add(update, w, alpha=plain, out=w)
        else:
            factor = neg_coef.neg().add_(projected)  # r + s c, per row
            torch.addcmul(update, w, _row_view(factor, w), out=w)
        write_back([param], [w])


def cpu_sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: SGDPOptions,
    scratch: Scratch | None,
) -> None:
    """SGDP, one parameter at a time, each one that ``takes`` accepts (see the module
    docstring). As in the reference release, without nesterov the update *is* the momentum
    buffer, so a projected weight's buffer is projected too."""
    decay = o.decay()
    mu = -o.momentum if o.maximize else o.momentum  # g + mu b, negated after: -(g - mu b)
    for i, param in enumerate(params):
        (w,), (g,) = compute_inputs([param], [grads[i]], maximize=False)  # negated below
        buf = momentum_buffers[i]
        if o.dampening == 0:  # b <- g + mu b in one pass (maximize: -(g - mu b), exactly)
            torch.add(g, buf, alpha=mu, out=buf)
            if o.maximize:
                buf.neg_()
        else:
            buf.mul_(o.momentum).add_(g, alpha=(-1 if o.maximize else 1) * (1 - o.dampening))
        update = buf
        if o.nesterov:  # g + mu b (maximize: -(g - mu b))
            update = torch.add(g, buf, alpha=mu, out=_scratch(scratch, param))
            if o.maximize:
                update.neg_()

        projected = False
        if w.dim() > 1:
            coef, code = _projection_coefficients(w, g, update, o.delta, o.eps)
            projections[i].copy_(code)
            if coef is not None:
                projected = True
                update.addcmul_(w, _row_view(coef, w), value=-1)

        if decay is None:
            w.add_(update, alpha=-o.lr)
        elif o.lr != 0:  # (lr 0 with decay: the factor is 1, nothing moves)
            factor = decay[1] if projected else decay[0]
            # f w - lr u in one pass: SGD's coupled decay d = u + wd' w, w - lr d, with
            # lr wd' = 1 - f.
            torch._fused_sgd_(
                [w], [update], [], weight_decay=(1 - factor) / o.lr, momentum=0.0, lr=o.lr,
                dampening=0.0, nesterov=False, maximize=False, is_first_step=False,
            )  # fmt: skip
        write_back([param], [w])
