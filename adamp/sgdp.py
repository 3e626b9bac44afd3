"""SGDP: SGD with momentum that projects the updates of scale-invariant weights."""

from __future__ import annotations

from typing import Any

from torch.optim.optimizer import ParamsT, required

from adamp import functional
from adamp._common import Scratch
from adamp._optimizer import (
    GroupTensors,
    ProjectingOptimizer,
    check_non_negative,
    check_unit_interval,
)


class SGDP(ProjectingOptimizer):
    r"""SGDP (Heo et al., ICLR 2021), with the arguments and numbers of ``adamp==0.3.0``.

    SGD's momentum update with its radial part removed on weights that look scale-invariant
    (see ``AdamP``), whose weight decay is then multiplied by ``wd_ratio``; the decay is
    decoupled and divided by ``1 - momentum``. The algorithm, line by line as math, is in
    the docstring of ``adamp.functional.sgdp``, which ``step()`` runs.

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

    def _update(self, group: dict[str, Any], tensors: GroupTensors, scratch: Scratch) -> None:
        functional.sgdp(
            tensors.params,
            tensors.grads,
            tensors.buffers["momentum"],
            tensors.projections,
            foreach=group["foreach"],
            fused=group["fused"],
            scratch=scratch,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            eps=group["eps"],
            delta=group["delta"],
            wd_ratio=group["wd_ratio"],
            maximize=group["maximize"],
        )
