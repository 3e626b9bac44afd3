"""SGDP: SGD with momentum that projects the updates of scale-invariant weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT, required

from adamp._cpu import cpu_sgdp_
from adamp._fused import fused_sgdp_
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
from adamp._projection import project_one_


class SGDP(ProjectingOptimizer):
    r"""SGDP (Heo et al., ICLR 2021), with the arguments and numbers of ``adamp==0.3.0``.

    For each parameter ``w`` with gradient ``g`` (negated when ``maximize``):

    .. math::
        b &\leftarrow \mu b + (1 - \text{dampening}) g \\
        u &= g + \mu b \quad\text{with nesterov, else}\quad u = b

    If ``w`` has two or more dimensions and looks scale-invariant (every row's
    ``|cos(g, w)| < delta / sqrt(row length)``, tried per output channel and then for the
    whole weight), the radial part of ``u`` is removed row by row,
    ``u <- u - w <w, u> / (||w|| + eps)^2``. Without nesterov ``u`` *is* the momentum
    buffer, so the buffer itself is projected, as in the reference release. Then

    .. math::
        w \leftarrow w \, \Bigl(1 - \frac{\text{lr} \cdot \text{weight\_decay} \cdot r}{1 - \mu}
                     \Bigr) - \text{lr} \cdot u

    with ``r = wd_ratio`` for projected weights and 1 otherwise: the weight decay is
    decoupled and divided by ``1 - momentum`` so that its strength matches plain SGD's
    coupled decay, whose gradient term the momentum amplifies by ``1 / (1 - momentum)``.

    ``step()`` never waits for the device; ``state[w]["projection"]`` and
    ``scale_invariant_fraction()`` report what the last step projected (see ``AdamP``).

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (required, as in the reference release).
        momentum: momentum factor ``mu``, in [0, 1).
        dampening: dampening of the gradient in the momentum, in [0, 1].
        weight_decay: decoupled weight decay, divided by ``1 - momentum``.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
        eps: added to norms in the projection, and the ``eps`` of the cosine similarity.
        delta: threshold of the scale-invariance test.
        wd_ratio: weight-decay multiplier for projected weights, in [0, 1].
        maximize: maximize the objective instead of minimizing.
        foreach: use the multi-tensor path (default: when every parameter is on a GPU and
            the fused kernels are not used). Left unset on the CPU, parameters are
            stepped one by one in fewer passes over memory, partly with torch's fused CPU
            SGD kernel (``adamp._cpu``); ``False`` runs the plain per-tensor path, the
            readable reference.
        fused: use the fused Triton kernels (default: when every parameter is a float32,
            float16 or bfloat16 CUDA tensor and Triton is installed): two passes over
            memory per step. All paths give the same numbers.
    """

    MOMENT_KEYS = ("momentum",)
    CPU_STEP = staticmethod(cpu_sgdp_)

    def __init__(
        self,
        params: ParamsT,
        lr: float = required,  # type: ignore[assignment]
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if lr is not required:  # type: ignore[comparison-overlap]
            check_non_negative("learning rate (lr)", lr)
        check_unit_interval("momentum", momentum, closed_high=False)
        check_unit_interval("dampening", dampening, closed_high=True)
        check_non_negative("weight_decay", weight_decay)
        check_non_negative("eps", eps)
        check_non_negative("delta", delta)
        check_unit_interval("wd_ratio", wd_ratio, closed_high=True)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires momentum > 0 and dampening = 0 "
                f"(got momentum={momentum!r}, dampening={dampening!r})"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "eps": eps,
            "delta": delta,
            "wd_ratio": wd_ratio,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "capturable": False,
        }
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["momentum"] = self._zeros_like(param)

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "lr": group["lr"],
            "momentum": group["momentum"],
            "dampening": group["dampening"],
            "weight_decay": group["weight_decay"],
            "nesterov": group["nesterov"],
            "eps": group["eps"],
            "delta": group["delta"],
            "wd_ratio": group["wd_ratio"],
            "maximize": group["maximize"],
        }

    def _single_tensor_step(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], **options: Any
    ) -> None:
        _single_tensor_sgdp(param, grad, state, **options)

    def _multi_tensor_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> None:
        _multi_tensor_sgdp(params, grads, states, **options)

    def _fused_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> bool:
        return fused_sgdp_(params, grads, states, **options)


def _decay(
    lr: float, weight_decay: float, wd_ratio: float, momentum: float
) -> tuple[float, float] | None:
    """SGDP's decay factors ``(plain, projected)``, divided by ``1 - momentum``."""
    if weight_decay != 0:
        return (
            1 - lr * weight_decay * 1 / (1 - momentum),
            1 - lr * weight_decay * wd_ratio / (1 - momentum),
        )
    return None


def _single_tensor_sgdp(
    param: Tensor,
    grad: Tensor,
    state: dict[str, Any],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    maximize: bool,
) -> None:
    """The readable per-tensor SGDP step (the multi-tensor path must agree with it)."""
    (w,) = to_compute([param])
    g = grad.to(w.dtype)
    if maximize:
        g = -g
    buf = state["momentum"]
    buf.mul_(momentum).add_(g, alpha=1 - dampening)
    update = g + momentum * buf if nesterov else buf

    decay = _decay(lr, weight_decay, wd_ratio, momentum)
    if param.dim() > 1:
        code = project_one_(w, g, update, delta, eps)
        state["projection"].copy_(code)
        if decay is not None:
            w.mul_(decay_factors(code, decay, w.dtype))
    elif decay is not None:
        w.mul_(decay[0])
    w.add_(update, alpha=-lr)
    write_back([param], [w])


def _multi_tensor_sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[dict[str, Any]],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    maximize: bool,
) -> None:
    """SGDP over tensors of one device and dtype with ``torch._foreach_*`` kernels."""
    ws = to_compute(params)
    gs = [g.to(w.dtype) for g, w in zip(grads, ws, strict=True)]
    if maximize:
        gs = list(torch._foreach_neg(gs))
    bufs = [s["momentum"] for s in states]
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, gs, alpha=1 - dampening)
    updates = list(torch._foreach_add(gs, bufs, alpha=momentum)) if nesterov else bufs

    project_and_decay_(
        ws, gs, updates, states, delta, eps, _decay(lr, weight_decay, wd_ratio, momentum)
    )
    apply_updates_(ws, updates, [float(lr)] * len(ws))
    write_back(params, ws)
