"""The fused AdamP and SGDP steps: two Triton kernels over every parameter of a dtype.

``fused=True`` (the default on CUDA where Triton is installed) replaces the multi-tensor
path's few dozen kernel launches per step, and its launches per weight for the row
statistics, with three Triton launches (``adamp._triton_kernels``: two passes over the
parameters and a small decision kernel between them) and a few tiny torch kernels for the
step counts. Nothing here waits for the device:

* the launch metadata (which segment of which tensor each program handles) depends on the
  shapes alone and is built once per shape set;
* the tables of tensor addresses are rebuilt only when a tensor moves (a new gradient
  tensor each step is common; the caching allocator usually hands back the same memory)
  and reach the device from pinned memory, without blocking;
* bias corrections are computed on the host from the CPU step counts, or on the device
  from device step counts when ``capturable=True`` (then the whole step can be captured
  in a CUDA graph, after one eager step has built the tables).

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors, which is how the CI
machine, which has no GPU, tests them.
"""

from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Parameter dtypes of the fused kernels (their math runs in float32)."""
SEG = 4096
"""Most elements one program handles: longer rows are cut into several segments."""
BLOCK = 1024
"""Elements per vector operation inside a program."""
NUM_WARPS = 4
"""Warps per program."""
_MAX_CACHED = 16
_MAX_TABLES = 64


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def unsupported_reason(params: Sequence[Tensor]) -> str | None:
    """Why the fused kernels cannot step ``params``, or ``None`` when they can."""
    if not triton_available():
        return "Triton is not installed (pip install triton)"
    cpu_ok = interpreting()
    for p in params:
        if p.dtype not in FUSED_DTYPES:
            return f"a parameter has dtype {p.dtype} (the fused kernels take float32/16, bf16)"
        if not p.is_cuda and not (cpu_ok and p.device.type == "cpu"):
            return f"a parameter is on {p.device} (the fused kernels run on CUDA devices)"
    return None


def _dense_rows(tensors: Sequence[Tensor]) -> bool:
    """True when every tensor lays out its rows (output channels) as dense blocks, alike."""
    first = tensors[0]
    if first.is_contiguous():
        return all(t.is_contiguous() for t in tensors)
    if first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last):
        return all(t.stride() == first.stride() for t in tensors)
    return False


def fusable(*tensor_lists: Sequence[Tensor]) -> bool:
    """True when the kernels can address every parameter with its gradient and state."""
    return all(_dense_rows(group) for group in zip(*tensor_lists, strict=True))


@dataclass
class Plan:
    """Launch metadata for one list of parameter shapes (device tensors, built once).

    Tensors are taken in ``order``: the ``weights`` the test may project first, then the
    one-dimensional parameters (one row each). Tensor ``t`` owns rows
    ``tensor_row_start[t]`` to ``tensor_row_start[t] + tensor_rows[t]``, of
    ``tensor_cols[t]`` elements each. Segment ``s`` covers ``seg_length[s]`` elements of
    tensor ``seg_tensor[s]`` from element ``seg_start[s]``, all in row ``seg_row[s]``.
    """

    order: list[int]
    weights: int
    rows: int
    seg_tensor: Tensor
    seg_start: Tensor
    seg_length: Tensor
    seg_row: Tensor
    one_segment_per_row: bool
    tensor_row_start: Tensor
    tensor_rows: Tensor
    tensor_cols: Tensor
    most_rows: int

    @property
    def segments(self) -> int:
        return int(self.seg_row.numel())


_PLANS: dict[tuple[Any, ...], Plan] = {}
_TABLES: OrderedDict[tuple[int, ...], Tensor | None] = OrderedDict()
"""Address tables by the addresses they hold, least recently used first (``None``: those
tensors cannot be addressed row by row)."""


def plan_for(params: Sequence[Tensor]) -> Plan:
    """The cached ``Plan`` of these parameters' shapes."""
    key = (params[0].device, *(tuple(p.shape) for p in params))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_CACHED:
            _PLANS.clear()
        plan = _build_plan(params)
        _PLANS[key] = plan
    return plan


def _build_plan(params: Sequence[Tensor]) -> Plan:
    device = params[0].device
    weights = [i for i, p in enumerate(params) if p.dim() > 1]
    flat = [i for i, p in enumerate(params) if p.dim() <= 1]
    order = weights + flat
    seg_tensor: list[Tensor] = []
    seg_start: list[Tensor] = []
    seg_length: list[Tensor] = []
    seg_row: list[Tensor] = []
    row_start: list[int] = []
    row_counts: list[int] = []
    col_counts: list[int] = []
    row = 0
    for position, i in enumerate(order):
        p = params[i]
        rows = p.shape[0] if p.dim() > 1 else 1
        cols = p.numel() // rows if rows else 0
        per_row = max(1, math.ceil(cols / SEG))
        row_start.append(row)
        row_counts.append(rows if cols else 0)
        col_counts.append(max(cols, 1))
        if rows == 0 or cols == 0:
            continue
        row_ids = torch.arange(rows, dtype=torch.int64).repeat_interleave(per_row)
        piece = torch.arange(per_row, dtype=torch.int64).repeat(rows)
        starts = row_ids * cols + piece * SEG
        seg_tensor.append(torch.full((rows * per_row,), position, dtype=torch.int32))
        seg_start.append(starts)
        seg_length.append(torch.clamp(cols - piece * SEG, max=SEG).to(torch.int32))
        seg_row.append((row_ids + row).to(torch.int32))
        row += rows
    one_per_row = all(math.ceil((p.numel() // max(1, _rows(p))) / SEG) <= 1 for p in params)

    def put(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
        return (torch.cat(parts) if parts else torch.empty(0, dtype=dtype)).to(device)

    return Plan(
        order=order,
        weights=len(weights),
        rows=row,
        seg_tensor=put(seg_tensor, torch.int32),
        seg_start=put(seg_start, torch.int64),
        seg_length=put(seg_length, torch.int32),
        seg_row=put(seg_row, torch.int32),
        one_segment_per_row=one_per_row,
        tensor_row_start=torch.tensor(row_start, dtype=torch.int32).to(device),
        tensor_rows=torch.tensor(row_counts, dtype=torch.int32).to(device),
        tensor_cols=torch.tensor(col_counts, dtype=torch.int32).to(device),
        most_rows=max(row_counts, default=0),
    )


def _rows(p: Tensor) -> int:
    return p.shape[0] if p.dim() > 1 else 1


def to_device(values: list[float] | list[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small host list on ``device`` without blocking (through pinned memory on CUDA)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def address_tables(*tensor_lists: Sequence[Tensor]) -> Tensor | None:
    """The ``int64`` addresses of each list's tensors, one row per list, on their device;
    ``None`` when some parameter, gradient or state tensor is not laid out row by row like
    its parameter (then the caller takes the foreach path).

    Cached by the addresses themselves, so a step whose tensors did not move costs one
    ``data_ptr()`` per tensor and no copy; a new table reaches the device from pinned
    memory without blocking. The layout is checked when a table is built.
    """
    key = tuple(t.data_ptr() for tensors in tensor_lists for t in tensors)
    if key in _TABLES:
        _TABLES.move_to_end(key)
        return _TABLES[key]
    device = tensor_lists[0][0].device
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "AdamP/SGDP fused: a tensor moved during CUDA graph capture; run one eager "
            "step with the same parameters and gradient tensors before capturing"
        )
    table = None
    if fusable(*tensor_lists):
        table = to_device(list(key), torch.int64, device).view(len(tensor_lists), -1)
    _TABLES[key] = table
    while len(_TABLES) > _MAX_TABLES:
        _TABLES.popitem(last=False)
    return table


def shared_base(tensors: Sequence[Tensor]) -> Tensor | None:
    """The one-dimensional tensor whose consecutive elements ``tensors`` are (0-dim views,
    in order), or ``None`` when they are not."""
    base = tensors[0]._base
    if (
        base is None
        or base.dim() != 1
        or base.numel() != len(tensors)
        or any(t._base is not base for t in tensors)
    ):
        return None
    size = base.element_size()
    if tensors[0].data_ptr() != base.data_ptr() or (
        tensors[-1].data_ptr() != base.data_ptr() + size * (len(tensors) - 1)
    ):
        return None
    return base


def share(states: Sequence[dict[str, Any]], key: str, values: Tensor) -> Tensor:
    """Make ``state[key]`` of each state a view of one element of a copy of ``values``
    (one-dimensional, in the states' order) and return that buffer, so that later steps
    update them all with one kernel (a step counter, the projection codes)."""
    buffer = values.clone()
    for state, view in zip(states, buffer.unbind(), strict=True):
        state[key] = view
    return buffer


def step_counts(states: Sequence[dict[str, Any]], device: torch.device) -> Tensor:
    """The states' step counts as one device tensor, each state's ``step`` a view into it.

    Built once (and again after a state dict is loaded, which brings separate step
    tensors, maybe on the CPU); then a step increments all counts with one kernel.
    """
    steps = [state["step"] for state in states]
    base = shared_base(steps)
    if base is not None and base.device == device:
        return base
    on_device = [
        s if s.device == device else to_device([float(s)], s.dtype, device)[0] for s in steps
    ]
    return share(states, "step", torch.stack(on_device).to(torch.float32))


DECIDE_ROWS = 512
"""Rows one program of the decision kernel reads at a time."""


def row_factors(
    plan: Plan,
    partials: Tensor,
    delta: float,
    eps: float,
    decay: tuple[float, float] | None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Each row's projection coefficient and decay factor, and each weight's code.

    From the segments' sums (rows cut into several segments are summed first), by one
    launch of ``decide``. The one-dimensional parameters' rows get coefficient 0 and the
    plain decay factor.
    """
    from adamp import _triton_kernels as kernels

    if plan.one_segment_per_row:
        stats = partials
    else:
        stats = partials.new_zeros(plan.rows, 4).index_add_(0, plan.seg_row, partials)
    plain, projected = (1.0, 1.0) if decay is None else decay
    coef = partials.new_empty(plan.rows)
    factor = partials.new_empty(plan.rows)
    codes = torch.empty(plan.weights, dtype=torch.uint8, device=partials.device)
    kernels.decide[(len(plan.order),)](
        stats,
        plan.tensor_row_start,
        plan.tensor_rows,
        plan.tensor_cols,
        codes,
        coef,
        factor,
        float(delta),
        float(eps),
        float(plain),
        float(projected),
        WEIGHTS=plan.weights,
        CHUNKS=max(1, math.ceil(plan.most_rows / DECIDE_ROWS)),
        ROWS=DECIDE_ROWS,
    )
    return coef, factor, (codes if plan.weights else None)


def record_codes(states: Sequence[dict[str, Any]], plan: Plan, codes: Tensor | None) -> None:
    """Store each weight's code in its ``state["projection"]``: with one copy once the
    codes are views of one buffer (``share``)."""
    if codes is None:
        return
    weights = [states[i] for i in plan.order[: plan.weights]]
    base = shared_base([state["projection"] for state in weights])
    if base is not None:
        base.copy_(codes)
    else:
        share(weights, "projection", codes)


def triton_dtype(dtype: torch.dtype) -> Any:
    """The Triton element type of a torch dtype."""
    import triton.language as tl

    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[
        dtype
    ]


def _ordered(plan: Plan, items: Sequence[T]) -> list[T]:
    """``items`` in the plan's tensor order."""
    return [items[i] for i in plan.order]


def _constants(ws: Sequence[Tensor], gs: Sequence[Tensor], nesterov: bool, maximize: bool) -> dict:
    """The compile-time arguments shared by the four kernels."""
    return {
        "W_DTYPE": triton_dtype(ws[0].dtype),
        "G_DTYPE": triton_dtype(gs[0].dtype),
        "C_DTYPE": triton_dtype(torch.float32),
        "NESTEROV": nesterov,
        "MAXIMIZE": maximize,
        "SEG": SEG,
        "BLOCK": BLOCK,
        "num_warps": NUM_WARPS,
    }


def _bias_correction(steps: Tensor, beta: float) -> Tensor:
    """``1 - beta**t`` as ``-expm1(t log beta)``: accurate where ``beta**t`` is near 1."""
    if beta == 0:
        return torch.ones_like(steps)
    return torch.expm1(steps * math.log(beta)).neg_()


def fused_adamp_(
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
) -> bool:
    """One AdamP step over parameters of one device and dtype (see the module docstring).

    Returns False, having changed nothing, when some tensor cannot be addressed row by
    row (the caller then takes the foreach path). Step counts live on the device, as in
    torch's fused optimizers, whether or not ``capturable`` is set.
    """
    from adamp import _triton_kernels as kernels

    del capturable  # always capturable: the step counts are on the device
    plan = plan_for(params)
    device = params[0].device
    ws, gs, ordered_states = _ordered(plan, params), _ordered(plan, grads), _ordered(plan, states)
    tables = address_tables(
        ws,
        gs,
        [s["exp_avg"] for s in ordered_states],
        [s["exp_avg_sq"] for s in ordered_states],
    )
    if tables is None:
        return False
    counts = step_counts(ordered_states, device).add_(1)
    step_size = _bias_correction(counts, beta1).reciprocal_().mul_(lr)
    sqrt_bc2 = _bias_correction(counts, beta2).sqrt_()
    constants = _constants(ws, gs, nesterov, maximize)
    grid = (plan.segments,)
    segments = (plan.seg_tensor, plan.seg_start, plan.seg_length)
    partials = torch.empty(plan.segments, 4, dtype=torch.float32, device=device)
    betas = (float(beta1), 1.0 - beta1)
    kernels.adamp_moments_and_stats[grid](
        *tables.unbind(),
        *segments,
        partials,
        sqrt_bc2,
        *betas,
        float(beta2),
        1.0 - beta2,
        float(eps),
        **constants,
    )
    decay = None
    if weight_decay > 0:
        decay = (1 - lr * weight_decay, 1 - lr * weight_decay * wd_ratio)
    coef, factor, codes = row_factors(plan, partials, delta, eps, decay)
    kernels.adamp_apply[grid](
        *tables.unbind(),
        *segments,
        plan.seg_row,
        coef,
        factor,
        step_size,
        sqrt_bc2,
        *betas,
        float(eps),
        **constants,
    )
    record_codes(states, plan, codes)
    return True


def fused_sgdp_(
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
) -> bool:
    """One SGDP step over parameters of one device and dtype (see the module docstring).

    Returns False, having changed nothing, when some tensor cannot be addressed row by
    row (the caller then takes the foreach path).
    """
    from adamp import _triton_kernels as kernels

    plan = plan_for(params)
    ws, gs, ordered_states = _ordered(plan, params), _ordered(plan, grads), _ordered(plan, states)
    tables = address_tables(ws, gs, [s["momentum"] for s in ordered_states])
    if tables is None:
        return False
    constants = _constants(ws, gs, nesterov, maximize)
    grid = (plan.segments,)
    segments = (plan.seg_tensor, plan.seg_start, plan.seg_length)
    partials = torch.empty(plan.segments, 4, dtype=torch.float32, device=params[0].device)
    kernels.sgdp_moments_and_stats[grid](
        *tables.unbind(), *segments, partials, float(momentum), 1.0 - dampening, **constants
    )
    decay = None
    if weight_decay != 0:
        decay = (
            1 - lr * weight_decay / (1 - momentum),
            1 - lr * weight_decay * wd_ratio / (1 - momentum),
        )
    coef, factor, codes = row_factors(plan, partials, delta, eps, decay)
    kernels.sgdp_apply[grid](
        *tables.unbind(),
        *segments,
        plan.seg_row,
        coef,
        factor,
        float(lr),
        float(momentum),
        **constants,
    )
    record_codes(states, plan, codes)
    return True
