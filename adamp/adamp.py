"""AdamP: Adam that slows the decay of the effective step size on scale-invariant weights."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adamp._cpu import cpu_adamp_
from adamp._fused import fused_adamp_
from adamp._optimizer import (
    ProjectingOptimizer,
    apply_updates_,
    check_non_negative,
    check_unit_interval,
    decay_factors,
    project_and_decay_,
    to_compute,
    write_back,
)
from adamp._projection import scale_invariance_one


class AdamP(ProjectingOptimizer):
    r"""AdamP (Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights", ICLR 2021), with the arguments and numbers of ``adamp==0.3.0``.

    For each parameter ``w`` with gradient ``g`` (negated when ``maximize``), at step ``t``:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        d_t &= \sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon \\
        u_t &= m_t / d_t \quad\text{or, with nesterov,}\quad
               (\beta_1 m_t + (1 - \beta_1) g_t) / d_t

    If ``w`` has two or more dimensions and looks scale-invariant (its gradient nearly
    orthogonal to it: every row's ``|cos(g, w)| < delta / sqrt(row length)``, tried first
    with one row per output channel, then with the whole weight as one row), the radial
    part of the update is removed row by row, ``u <- u - w <w, u> / (||w|| + eps)^2``, and
    the weight decay is multiplied by ``wd_ratio``. Then

    .. math::
        w \leftarrow w \, (1 - \text{lr} \cdot \text{weight\_decay} \cdot r)
                     - \frac{\text{lr}}{1 - \beta_1^t} u_t

    with ``r = wd_ratio`` for projected weights and 1 otherwise (decoupled weight decay,
    applied only when ``weight_decay > 0``). Biases and norm parameters (one dimension) are
    never projected.

    Unlike the reference release, ``step()`` never waits for the device: the
    scale-invariance test is a device tensor (see ``adamp._projection``). After each step,
    ``state[w]["projection"]`` holds how ``w`` was treated (0 none, 1 channel view, 2 layer
    view) and ``scale_invariant_fraction()`` the share of weights projected.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate.
        betas: decay rates of the first and second moment estimates, each in [0, 1).
        eps: added to the denominator, and the ``eps`` of the cosine similarity.
        weight_decay: decoupled weight decay (AdamW style).
        delta: threshold of the scale-invariance test.
        wd_ratio: weight-decay multiplier for projected weights, in [0, 1].
        nesterov: use Nesterov momentum in the update direction.
        maximize: maximize the objective instead of minimizing.
        foreach: use the multi-tensor path (default: when every parameter is on a GPU and
            the fused kernels are not used, as ``torch.optim``). Left unset on the CPU,
            parameters are stepped one by one with torch's fused CPU Adam kernel doing the
            moments (``adamp._cpu``); ``False`` runs the plain per-tensor path, the
            readable reference.
        fused: use the fused Triton kernels (default: when every parameter is a float32,
            float16 or bfloat16 CUDA tensor and Triton is installed): two passes over
            memory per step, no per-weight launches. All paths give the same numbers.
        capturable: keep the step count on the parameter's device so the step can be
            captured in a CUDA graph.
    """

    MOMENT_KEYS = ("exp_avg", "exp_avg_sq")
    CPU_STEP = staticmethod(cpu_adamp_)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
    ) -> None:
        check_non_negative("learning rate (lr)", lr)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        check_non_negative("delta", delta)
        check_unit_interval("wd_ratio", wd_ratio, closed_high=True)
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
        check_unit_interval("beta1 (betas[0])", betas[0], closed_high=False)
        check_unit_interval("beta2 (betas[1])", betas[1], closed_high=False)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "delta": delta,
            "wd_ratio": wd_ratio,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = self._step_tensor(param, group)
        state["exp_avg"] = self._zeros_like(param)
        state["exp_avg_sq"] = self._zeros_like(param)

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return {
            "lr": group["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "delta": group["delta"],
            "wd_ratio": group["wd_ratio"],
            "nesterov": group["nesterov"],
            "maximize": group["maximize"],
            "capturable": group["capturable"],
        }

    def _single_tensor_step(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], **options: Any
    ) -> None:
        scratch = self._scratch_like(param)
        _single_tensor_adamp(param, grad, state, scratch=scratch, **options)

    def _multi_tensor_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> None:
        _multi_tensor_adamp(params, grads, states, **options)

    def _fused_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> bool:
        return fused_adamp_(params, grads, states, **options)


def _single_tensor_adamp(
    param: Tensor,
    grad: Tensor,
    state: dict[str, Any],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
    maximize: bool,
    capturable: bool,
    scratch: Tensor | None = None,
) -> None:
    """The readable per-tensor AdamP step (the multi-tensor path must agree with it).

    ``scratch``, if given, is memory of the parameter's size for the update, reused from
    step to step: a fresh buffer of that size costs a CPU as much as the arithmetic.
    Two passes are saved against the formula as written: ``1 / sqrt(1 - beta2^t)`` moves
    from the denominator into the step size (``eps`` scaled to match), and the projection
    joins the weight update, ``w <- w * (r + s c) - s u``, which is
    ``w * r - s * (u - c w)``.
    """
    (w,) = to_compute([param])
    g = grad.to(w.dtype)
    if maximize:
        g = -g
    exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
    step += 1

    exp_avg.lerp_(g, 1 - beta1)  # beta1 * m + (1 - beta1) * g in one pass
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step_size: float | Tensor
    denom = exp_avg_sq.sqrt() if scratch is None else torch.sqrt(exp_avg_sq, out=scratch)
    if capturable or step.device.type != "cpu":
        t = step.to(w.dtype)  # step count in the compute dtype, still on the device
        denom.div_(_bias_corrections(beta2, [t])[0].sqrt()).add_(eps)
        step_size = lr / _bias_corrections(beta1, [t])[0]
    else:
        t = step.item()  # the step count lives on the CPU: no device sync
        # m / (sqrt(v) / c + eps) = c * m / (sqrt(v) + eps * c), with c = sqrt(1 - beta2^t)
        correction2 = math.sqrt(1 - beta2**t)
        denom.add_(eps * correction2)
        step_size = lr / (1 - beta1**t) * correction2
    numerator = beta1 * exp_avg + (1 - beta1) * g if nesterov else exp_avg
    update = torch.div(numerator, denom, out=denom)

    decay = _decay(lr, weight_decay, wd_ratio)
    if param.dim() > 1:
        coef, code = scale_invariance_one(w, g, update, delta, eps)
        state["projection"].copy_(code)
        factor = coef.mul_(step_size)
        if decay is not None:
            factor.add_(decay_factors(code, decay, w.dtype))
        else:
            factor.add_(1)
        w.mul_(factor.view([-1] + [1] * (w.dim() - 1)))
    elif decay is not None:
        w.mul_(decay[0])

    if isinstance(step_size, Tensor):
        w.sub_(update.mul_(step_size))
    else:
        w.add_(update, alpha=-step_size)
    write_back([param], [w])


def _multi_tensor_adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[dict[str, Any]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
    maximize: bool,
    capturable: bool,
) -> None:
    """AdamP over tensors of one device and dtype with ``torch._foreach_*`` kernels."""
    ws = to_compute(params)
    gs = [g.to(w.dtype) for g, w in zip(grads, ws, strict=True)]
    if maximize:
        gs = list(torch._foreach_neg(gs))
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)

    torch._foreach_lerp_(exp_avgs, gs, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, gs, gs, value=1 - beta2)

    denoms = list(torch._foreach_sqrt(exp_avg_sqs))
    step_sizes: list[float] | list[Tensor]
    if capturable or steps[0].device.type != "cpu":
        # Step counts in the compute dtype (float64 parameters keep float64 precision).
        ts = [t.to(ws[0].dtype) for t in steps]
        bias2 = _bias_corrections(beta2, ts)
        torch._foreach_sqrt_(bias2)
        torch._foreach_div_(denoms, bias2)
        bias1 = _bias_corrections(beta1, ts)
        torch._foreach_reciprocal_(bias1)
        torch._foreach_mul_(bias1, lr)
        step_sizes = list(bias1)
    else:
        ts = [t.item() for t in steps]  # CPU step counts: no device sync
        torch._foreach_div_(denoms, [math.sqrt(1 - beta2**t) for t in ts])
        step_sizes = [lr / (1 - beta1**t) for t in ts]
    torch._foreach_add_(denoms, eps)

    if nesterov:
        updates = list(torch._foreach_mul(exp_avgs, beta1))
        torch._foreach_add_(updates, gs, alpha=1 - beta1)
        torch._foreach_div_(updates, denoms)
    else:  # divide into the denominators' memory: one large temporary fewer
        torch._foreach_reciprocal_(denoms)
        torch._foreach_mul_(denoms, exp_avgs)
        updates = denoms

    project_and_decay_(ws, gs, updates, states, delta, eps, _decay(lr, weight_decay, wd_ratio))
    apply_updates_(ws, updates, step_sizes)
    write_back(params, ws)


def _bias_corrections(beta: float, steps: Sequence[Tensor]) -> list[Tensor]:
    """``1 - beta**t`` for each step-count tensor ``t``, computed as ``-expm1(t * log(beta))``.

    The direct form cancels catastrophically when ``beta**t`` is close to 1 (``beta2=0.999``
    at the first steps): in float32 it is off by about 1e-5 relative, and the capturable path
    (step counts on the device) would not give the numbers of the plain path, which computes
    the corrections in double precision on the host. This form is accurate to a few ulps of
    the step count's dtype. New tensors: the step counts are left as they are.
    """
    if beta == 0:
        return [torch.ones_like(t) for t in steps]  # 1 - 0**t for t >= 1
    corrections = list(torch._foreach_mul(list(steps), math.log(beta)))
    torch._foreach_expm1_(corrections)
    torch._foreach_neg_(corrections)
    return corrections


def _decay(lr: float, weight_decay: float, wd_ratio: float) -> tuple[float, float] | None:
    """AdamP's decoupled decay factors ``(plain, projected)``; ``None`` without decay."""
    if weight_decay > 0:
        return 1 - lr * weight_decay * 1, 1 - lr * weight_decay * wd_ratio
    return None
