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
* the step counts live on the device (the optimizers keep them there, as torch's fused
  optimizers do), so the bias corrections are computed there: the whole step can be
  captured in a CUDA graph, after one eager step has built the tables.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors, which is how the CI
machine, which has no GPU, tests them. (A little over 400 lines: the launch plans, the
address tables and the two steps share ``Plan`` and the caches; split, each part would
reach into the other's private state.)
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

from adamp._common import AdamPOptions, Decay, Scratch, SGDPOptions, adam_scales

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


DECIDE_ROWS = 512
"""Rows one program of the decision kernel reads at a time."""


def row_factors(
    plan: Plan,
    partials: Tensor,
    delta: float,
    eps: float,
    decay: Decay | None,
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


def addressable(params: Sequence[Tensor], *state: Sequence[Tensor]) -> bool:
    """True when the kernels can address every parameter with its gradient and state
    buffers, row by row (``address_tables``: cached, so the step's own lookup that follows
    costs one ``data_ptr()`` per tensor). Parameters of one device and dtype."""
    plan = plan_for(params)
    return address_tables(*(_ordered(plan, tensors) for tensors in (params, *state))) is not None


def _count_steps(state_steps: Sequence[Tensor], device: torch.device) -> Tensor:
    """Increment the step counts (one multi-tensor kernel) and gather them into one tensor
    on ``device`` for the kernels (kept there by the optimizers: no copy then)."""
    torch._foreach_add_(list(state_steps), 1)
    return torch.stack(list(state_steps)).to(device=device, dtype=torch.float32)


def _record_codes(projections: Sequence[Tensor], plan: Plan, codes: Tensor | None) -> None:
    """Copy each weight's code (in the plan's order) into its projection tensor."""
    if codes is not None:
        weights = _ordered(plan, projections)[: plan.weights]
        torch._foreach_copy_(weights, list(codes.unbind()))


def fused_adamp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: AdamPOptions,
    scratch: Scratch | None,
) -> None:
    """One AdamP step over parameters of one device and dtype that ``addressable`` accepts
    (see the module docstring). Step counts belong on the parameters' device, as in
    torch's fused optimizers, whatever ``capturable`` says (``scratch``: not needed)."""
    from adamp import _triton_kernels as kernels

    plan = plan_for(params)
    device = params[0].device
    ws, gs = _ordered(plan, params), _ordered(plan, grads)
    tables = address_tables(ws, gs, _ordered(plan, exp_avgs), _ordered(plan, exp_avg_sqs))
    assert tables is not None, "fused_adamp called for tensors it cannot address"
    counts = _count_steps(_ordered(plan, state_steps), device)
    step_size, sqrt_bc2 = adam_scales(o.lr, o.beta1, o.beta2, counts)
    constants = _constants(ws, gs, o.nesterov, o.maximize)
    grid = (plan.segments,)
    segments = (plan.seg_tensor, plan.seg_start, plan.seg_length)
    partials = torch.empty(plan.segments, 4, dtype=torch.float32, device=device)
    betas = (float(o.beta1), 1.0 - o.beta1)
    kernels.adamp_moments_and_stats[grid](
        *tables.unbind(),
        *segments,
        partials,
        sqrt_bc2,
        *betas,
        float(o.beta2),
        1.0 - o.beta2,
        float(o.eps),
        **constants,
    )
    coef, factor, codes = row_factors(plan, partials, o.delta, o.eps, o.decay())
    kernels.adamp_apply[grid](
        *tables.unbind(),
        *segments,
        plan.seg_row,
        coef,
        factor,
        step_size,
        sqrt_bc2,
        *betas,
        float(o.eps),
        **constants,
    )
    _record_codes(projections, plan, codes)


def fused_sgdp(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    projections: Sequence[Tensor],
    o: SGDPOptions,
    scratch: Scratch | None,
) -> None:
    """One SGDP step over parameters of one device and dtype that ``addressable`` accepts
    (see the module docstring; ``scratch``: not needed)."""
    from adamp import _triton_kernels as kernels

    plan = plan_for(params)
    ws, gs = _ordered(plan, params), _ordered(plan, grads)
    tables = address_tables(ws, gs, _ordered(plan, momentum_buffers))
    assert tables is not None, "fused_sgdp called for tensors it cannot address"
    constants = _constants(ws, gs, o.nesterov, o.maximize)
    grid = (plan.segments,)
    segments = (plan.seg_tensor, plan.seg_start, plan.seg_length)
    partials = torch.empty(plan.segments, 4, dtype=torch.float32, device=params[0].device)
    kernels.sgdp_moments_and_stats[grid](
        *tables.unbind(), *segments, partials, float(o.momentum), 1.0 - o.dampening, **constants
    )
    coef, factor, codes = row_factors(plan, partials, o.delta, o.eps, o.decay())
    kernels.sgdp_apply[grid](
        *tables.unbind(),
        *segments,
        plan.seg_row,
        coef,
        factor,
        float(o.lr),
        float(o.momentum),
        **constants,
    )
    _record_codes(projections, plan, codes)
