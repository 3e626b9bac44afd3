"""AdamP: Adam that slows the decay of the effective step size on scale-invariant weights."""

from __future__ import annotations

from typing import Any

from torch.optim.optimizer import ParamsT

from adamp import functional
from adamp._common import Scratch
from adamp._optimizer import (
    GroupTensors,
    ProjectingOptimizer,
    check_non_negative,
    check_unit_interval,
)


class AdamP(ProjectingOptimizer):
    r"""AdamP (Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights", ICLR 2021), with the arguments and numbers of ``adamp==0.3.0``.

    Adam's update ``m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``, with its radial part removed
    on weights that look scale-invariant (their gradient nearly orthogonal to them, tested
    per output channel, then for the whole weight), whose weight decay is then multiplied
    by ``wd_ratio``. The algorithm, line by line as math, is in the docstring of
    ``adamp.functional.adamp``, which ``step()`` runs.

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
    COUNTS_STEPS = True

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

    def _update(self, group: dict[str, Any], tensors: GroupTensors, scratch: Scratch) -> None:
        beta1, beta2 = group["betas"]
        functional.adamp(
            tensors.params,
            tensors.grads,
            tensors.buffers["exp_avg"],
            tensors.buffers["exp_avg_sq"],
            tensors.state_steps,
            tensors.projections,
            foreach=group["foreach"],
            fused=group["fused"],
            capturable=group["capturable"],
            scratch=scratch,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            delta=group["delta"],
            wd_ratio=group["wd_ratio"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
