r"""Functional AdamP and SGDP over plain tensor lists, and the one place where a path is chosen.

``adamp(...)`` and ``sgdp(...)`` are what ``AdamP.step`` and ``SGDP.step`` run, as
``torch.optim.adam.adam`` is what ``torch.optim.Adam.step`` runs: lists of parameters,
gradients and state tensors in, the parameters and state updated in place. They only
dispatch; the arithmetic lives in one function per path:

=================  ===========================================  ================================
path               where                                        when (``_choose_paths``)
=================  ===========================================  ================================
fused              ``adamp._fused`` (Triton, two passes)        CUDA by default where Triton is
                                                                installed, or ``fused=True``
foreach            ``adamp._foreach`` (``torch._foreach_*``)    other GPUs, or ``foreach=True``
cpu kernels        ``adamp._cpu`` (torch's fused CPU kernels)   CPU by default
single tensor      ``adamp._single_tensor`` (readable)          ``foreach=False``, or what the
                                                                CPU kernels cannot take
=================  ===========================================  ================================

All paths give the same numbers (up to rounding); the single-tensor one is the reference the
others are tested against, and none reads a device value (no host-device sync), except the
CPU paths, where reading a value waits for nothing.

**The projection** (both optimizers). A weight ``w`` of two or more dimensions, with
gradient ``g`` and update ``u``, is viewed as rows: first one row per output channel (the
*channel view*), then the whole weight as one row (the *layer view*). The first view whose
rows all pass

.. math::
    \frac{|\langle g_i, w_i \rangle|}{\max(\|g_i\|, \epsilon) \max(\|w_i\|, \epsilon)}
    < \frac{\delta}{\sqrt{\text{row length}}}

is taken (the weight looks scale-invariant, as a convolution followed by BatchNorm is), and
the radial part of the update is removed row by row, with the weight decay scaled by
``wd_ratio``:

.. math::
    u_i \leftarrow u_i - w_i \frac{\langle w_i, u_i \rangle}{(\|w_i\| + \epsilon)^2},
    \qquad r = \text{wd\_ratio}

If neither view passes, ``u`` is left alone and ``r = 1``; one-dimensional parameters
(biases, norm weights) are never projected. ``projections[i]`` receives how parameter ``i``
was treated: ``NO_PROJECTION`` (0), ``CHANNEL_VIEW`` (1) or ``LAYER_VIEW`` (2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adamp import _cpu, _foreach, _fused, _single_tensor
from adamp._common import AdamPOptions, Scratch, SGDPOptions, group_by_device_and_dtype

__all__ = ["adamp", "sgdp"]

GPU_DEVICES = ("cuda", "xpu", "mps")
"""Devices where the multi-tensor path is the default, as in ``torch.optim``."""


def adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    projections: Sequence[Tensor] | None = None,
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    scratch: Scratch | None = None,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    maximize: bool = False,
) -> None:
    r"""One AdamP step (Heo et al., ICLR 2021) over tensor lists, in place.

    For each parameter ``w`` with gradient ``g`` (negated when ``maximize``) and step count
    ``t`` (incremented first):

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        u_t &= \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}
               \quad\text{or, with nesterov,}\quad
               \frac{\beta_1 m_t + (1 - \beta_1) g_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t}
               + \epsilon} \\
        u_t &\leftarrow \text{the projection of } u_t \text{ (module docstring), which gives } r \\
        w &\leftarrow w \, (1 - \text{lr} \cdot \text{weight\_decay} \cdot r)
              - \frac{\text{lr}}{1 - \beta_1^t} u_t

    (decoupled weight decay, applied only when ``weight_decay > 0``).

    Args:
        params, grads: the parameters and their dense gradients.
        exp_avgs, exp_avg_sqs: ``m`` and ``v``, like each parameter (float32 for fp16/bf16
            parameters, whose math runs in float32 and is rounded once, into the parameter).
        state_steps: 0-dim float32 step counts: on the CPU, or on the parameter's device
            with ``capturable`` and for the fused path.
        projections: 0-dim ``uint8`` tensors that receive each weight's projection code
            (``None``: not kept).
        foreach, fused: the path (see the module docstring); ``None`` picks the fastest.
        capturable: step counts on the device, bias corrections computed there (no sync,
            CUDA-graph capturable).
        scratch: where per-tensor CPU steps keep memory from call to call (an optimizer
            passes its own); ``None``: fresh memory for this call.
        lr, beta1, beta2, eps, weight_decay, delta, wd_ratio, nesterov, maximize: as for
            ``adamp.AdamP``.
    """
    projections = _codes_or_throwaway(projections, params)
    tensors = (params, grads, exp_avgs, exp_avg_sqs, state_steps, projections)
    _check_lengths(*tensors)
    options = AdamPOptions(
        lr, beta1, beta2, eps, weight_decay, delta, wd_ratio, nesterov, maximize, capturable
    )
    # torch's CPU Adam kernel has no Nesterov momentum: those steps take the plain path.
    chosen = _choose_paths(
        params, grads, (exp_avgs, exp_avg_sqs), state_steps, fused=fused, foreach=foreach,
        cpu_kernels=not nesterov,
    )  # fmt: skip
    for path, indices in chosen:
        _adamp_step(path)(*_pick(tensors, indices, len(params)), options, scratch)


def sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    projections: Sequence[Tensor] | None = None,
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    scratch: Scratch | None = None,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    maximize: bool = False,
) -> None:
    r"""One SGDP step (Heo et al., ICLR 2021) over tensor lists, in place.

    For each parameter ``w`` with gradient ``g`` (negated when ``maximize``) and momentum
    buffer ``b``:

    .. math::
        b &\leftarrow \mu b + (1 - \text{dampening}) g \\
        u &= g + \mu b \quad\text{with nesterov, else}\quad u = b \\
        u &\leftarrow \text{the projection of } u \text{ (module docstring), which gives } r \\
        w &\leftarrow w \, \Bigl(1 - \frac{\text{lr} \cdot \text{weight\_decay}
              \cdot r}{1 - \mu}\Bigr) - \text{lr} \cdot u

    Without nesterov ``u`` *is* the momentum buffer, so the buffer itself is projected, as
    in the reference release. The weight decay is decoupled and divided by ``1 - mu`` so
    that its strength matches plain SGD's coupled decay, whose gradient term the momentum
    amplifies by ``1 / (1 - mu)``.

    Args:
        params, grads: the parameters and their dense gradients.
        momentum_buffers: ``b``, like each parameter (float32 for fp16/bf16 parameters).
        projections, foreach, fused, scratch: as for ``adamp``.
        lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, maximize: as
            for ``adamp.SGDP``.
    """
    projections = _codes_or_throwaway(projections, params)
    tensors = (params, grads, momentum_buffers, projections)
    _check_lengths(*tensors)
    options = SGDPOptions(
        lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, maximize
    )
    chosen = _choose_paths(
        params, grads, (momentum_buffers,), None, fused=fused, foreach=foreach, cpu_kernels=True
    )
    for path, indices in chosen:
        _sgdp_step(path)(*_pick(tensors, indices, len(params)), options, scratch)


class Path(enum.Enum):
    """The four ways a step can go (see the module docstring)."""

    FUSED = "fused"
    FOREACH = "foreach"
    CPU_KERNELS = "cpu kernels"
    SINGLE_TENSOR = "single tensor"


def _adamp_step(path: Path) -> Callable[..., None]:
    """The AdamP function of ``path`` (looked up at each call, so tests may replace one)."""
    return {
        Path.FUSED: _fused.fused_adamp,
        Path.FOREACH: _foreach.multi_tensor_adamp,
        Path.CPU_KERNELS: _cpu.cpu_adamp,
        Path.SINGLE_TENSOR: _single_tensor.single_tensor_adamp,
    }[path]


def _sgdp_step(path: Path) -> Callable[..., None]:
    """The SGDP function of ``path`` (looked up at each call, so tests may replace one)."""
    return {
        Path.FUSED: _fused.fused_sgdp,
        Path.FOREACH: _foreach.multi_tensor_sgdp,
        Path.CPU_KERNELS: _cpu.cpu_sgdp,
        Path.SINGLE_TENSOR: _single_tensor.single_tensor_sgdp,
    }[path]


def _default_to_fused_or_foreach(
    params: Sequence[Tensor], fused: bool | None, foreach: bool | None
) -> tuple[bool, bool]:
    """``(fused, foreach)`` for ``params``, from the flags given (``None``: pick), as
    torch's function of this name does for its optimizers.

    Fused when asked (and then it must be possible: an error names why not), or by default
    where every parameter is a CUDA tensor the Triton kernels take; never while
    ``torch.compile`` traces the step (inductor fuses the foreach path itself). Otherwise
    foreach when asked, or by default where every parameter is on a GPU. Neither: one
    tensor at a time.
    """
    if fused and foreach:
        raise ValueError("fused=True and foreach=True are exclusive: choose one path")
    if fused is False or torch.compiler.is_compiling():
        use_fused = False
    elif fused:
        reason = _fused.unsupported_reason(params)
        if reason is not None:
            raise RuntimeError(
                f"fused=True cannot step these parameters: {reason}. "
                "Leave fused unset to pick the fastest available path."
            )
        use_fused = True
    else:
        use_fused = (
            foreach is None
            and all(p.device.type == "cuda" for p in params)
            and _fused.unsupported_reason(params) is None
        )
    if use_fused:
        return True, False
    if foreach is None:
        foreach = bool(params) and all(
            p.device.type in GPU_DEVICES and torch.is_floating_point(p) for p in params
        )
    return False, bool(foreach)


def _choose_paths(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    buffers: Sequence[Sequence[Tensor]],
    state_steps: Sequence[Tensor] | None,
    *,
    fused: bool | None,
    foreach: bool | None,
    cpu_kernels: bool,
) -> list[tuple[Path, list[int]]]:
    """Which path steps which parameters (by index): the one place where paths are chosen,
    fallbacks included.

    The multi-tensor paths go by device and dtype group: a group the fused kernels cannot
    address row by row (a gradient or state buffer laid out unlike its parameter) takes the
    foreach path. The per-tensor paths go by tensor: with neither flag given (and
    ``cpu_kernels``, false for what the optimizer's CPU kernels never take), each tensor
    that torch's fused CPU kernels can step (``adamp._cpu.takes``) goes to them, the rest to
    the single-tensor path; ``foreach=False`` or ``fused=False`` sends every tensor there.
    """
    use_fused, use_foreach = _default_to_fused_or_foreach(params, fused, foreach)
    chosen: list[tuple[Path, list[int]]] = []
    if use_fused or use_foreach:
        for indices in group_by_device_and_dtype(params).values():
            addressable = use_fused and _fused.addressable(
                *_pick((params, grads, *buffers), indices, len(params))
            )
            chosen.append((Path.FUSED if addressable else Path.FOREACH, indices))
        return chosen
    kernels = (
        cpu_kernels
        and foreach is None
        and fused is None
        and not torch.compiler.is_compiling()
        and _cpu.cpu_kernels_available()
    )
    taken: list[int] = []
    plain: list[int] = []
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        step = None if state_steps is None else state_steps[i]
        if kernels and _cpu.takes(param, grad, [b[i] for b in buffers], step):
            taken.append(i)
        else:
            plain.append(i)
    chosen = [(Path.CPU_KERNELS, taken), (Path.SINGLE_TENSOR, plain)]
    return [(path, indices) for path, indices in chosen if indices]


def _pick(
    tensor_lists: Sequence[Sequence[Tensor]], indices: list[int], total: int
) -> list[Sequence[Tensor]]:
    """The entries ``indices`` of each list (the lists themselves when that is all of them)."""
    if len(indices) == total:
        return list(tensor_lists)
    return [[tensors[i] for i in indices] for tensors in tensor_lists]


def _codes_or_throwaway(
    projections: Sequence[Tensor] | None, params: Sequence[Tensor]
) -> Sequence[Tensor]:
    """``projections``, or codes nobody keeps (one 0-dim ``uint8`` tensor per parameter)."""
    if projections is not None:
        return projections
    return [torch.zeros((), dtype=torch.uint8, device=p.device) for p in params]


def _check_lengths(*tensor_lists: Sequence[Any]) -> None:
    """Every list holds one entry per parameter."""
    lengths = {len(tensors) for tensors in tensor_lists}
    if len(lengths) > 1:
        raise ValueError(f"tensor lists of different lengths: {[len(t) for t in tensor_lists]}")
