"""Triton kernels of the fused AdamP and SGDP steps: two passes over memory per step.

Imported only when a fused step runs (``adamp._fused``), so that ``import adamp`` needs
torch alone, and so that ``TRITON_INTERPRET=1`` set by a test before the first fused step
runs these kernels on the CPU.

Work is cut into *segments*: pieces of one row of one parameter (a row is one output
channel of a weight, ``w.view(w.size(0), -1)[i]``; a one-dimensional parameter is a single
row), at most ``SEG`` elements each. One program handles one segment. Tensors are reached
through tables of their addresses (``int64``), so one launch covers every parameter of a
dtype, whatever their number and sizes, as torch's own fused optimizers do with their
tensor-list metadata.

* Pass one (``*_moments_and_stats``) updates the moments, forms the update direction ``u``
  and writes each segment's four sums ``<w,w>``, ``<w,g>``, ``<g,g>``, ``<w,u>``: the
  statistics of the scale-invariance test and of the projection.
* Between the passes, one small kernel (``decide``, a program per tensor) runs the test
  from the rows' sums and gives every row its coefficient ``c`` and decay factor ``d``
  (the formulas of ``adamp._projection.radial_coefficients``).
* Pass two (``*_apply``) recomputes ``u`` from the stored moments (reading them again
  costs what writing and reading a stored ``u`` would, without its memory) and writes
  ``w <- w * (d + s * c) - s * u``, which is ``w * d - s * (u - c * w)``: projection,
  decoupled weight decay and the step in one pass.

Bytes per float32 parameter: pass one reads w, g, m, v and writes m, v (24); pass two
reads w, m, v and writes w (16): the 40 bytes the benchmark's floor counts.

Scalars loaded from memory are only used in arithmetic and in ``if`` (never as a ``range``
bound), and loops have a compile-time trip count with a guard, so the kernels also run
under the Triton interpreter with NumPy 2.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _segment(table, seg_tensor, seg_start, s, dtype: tl.constexpr):
    """Pointer to the first element of segment ``s`` in the tensor its table entry names."""
    t = tl.load(seg_tensor + s)
    return tl.load(table + t).to(tl.pointer_type(dtype)) + tl.load(seg_start + s)


@triton.jit
def _rounded(x, dtype: tl.constexpr):
    """``x`` (float32) in ``dtype``, rounded to nearest even.

    For bfloat16 the rounding is done on the bits here: the GPU's conversion rounds to
    nearest even, the Triton interpreter's truncates, and both must give torch's numbers.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def adamp_moments_and_stats(
    w_table,
    g_table,
    m_table,
    v_table,
    seg_tensor,
    seg_start,
    seg_length,
    partials,
    sqrt_bc2,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    W_DTYPE: tl.constexpr,
    G_DTYPE: tl.constexpr,
    C_DTYPE: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    SEG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Adam's moments, in place, and the four sums of each segment (pass one of AdamP)."""
    s = tl.program_id(0)
    t = tl.load(seg_tensor + s)
    n = tl.load(seg_length + s)
    w_ptr = _segment(w_table, seg_tensor, seg_start, s, W_DTYPE)
    g_ptr = _segment(g_table, seg_tensor, seg_start, s, G_DTYPE)
    m_ptr = _segment(m_table, seg_tensor, seg_start, s, C_DTYPE)
    v_ptr = _segment(v_table, seg_tensor, seg_start, s, C_DTYPE)
    bias2 = tl.load(sqrt_bc2 + t)
    acc_ww = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_wg = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_gg = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_wu = tl.zeros([BLOCK], dtype=C_DTYPE)
    for i in tl.static_range(0, SEG, BLOCK):
        if i < n:
            offs = i + tl.arange(0, BLOCK)
            mask = offs < n
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            if MAXIMIZE:
                g = -g
            m = tl.load(m_ptr + offs, mask=mask, other=0.0)
            v = tl.load(v_ptr + offs, mask=mask, other=0.0)
            m = beta1 * m + one_minus_beta1 * g
            v = beta2 * v + one_minus_beta2 * g * g
            tl.store(m_ptr + offs, m, mask=mask)
            tl.store(v_ptr + offs, v, mask=mask)
            if NESTEROV:
                num = beta1 * m + one_minus_beta1 * g
            else:
                num = m
            u = tl.where(mask, num / (tl.sqrt(v) / bias2 + eps), 0.0)
            acc_ww += w * w
            acc_wg += w * g
            acc_gg += g * g
            acc_wu += w * u
    out = partials + 4 * s
    tl.store(out, tl.sum(acc_ww, 0))
    tl.store(out + 1, tl.sum(acc_wg, 0))
    tl.store(out + 2, tl.sum(acc_gg, 0))
    tl.store(out + 3, tl.sum(acc_wu, 0))


@triton.jit
def adamp_apply(
    w_table,
    g_table,
    m_table,
    v_table,
    seg_tensor,
    seg_start,
    seg_length,
    seg_row,
    row_coef,
    row_decay,
    step_size,
    sqrt_bc2,
    beta1,
    one_minus_beta1,
    eps,
    W_DTYPE: tl.constexpr,
    G_DTYPE: tl.constexpr,
    C_DTYPE: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    SEG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``w <- w * (d + s * c) - s * u`` for each segment (pass two of AdamP)."""
    s = tl.program_id(0)
    t = tl.load(seg_tensor + s)
    n = tl.load(seg_length + s)
    row = tl.load(seg_row + s)
    w_ptr = _segment(w_table, seg_tensor, seg_start, s, W_DTYPE)
    g_ptr = _segment(g_table, seg_tensor, seg_start, s, G_DTYPE)
    m_ptr = _segment(m_table, seg_tensor, seg_start, s, C_DTYPE)
    v_ptr = _segment(v_table, seg_tensor, seg_start, s, C_DTYPE)
    bias2 = tl.load(sqrt_bc2 + t)
    size = tl.load(step_size + t)
    scale = tl.load(row_decay + row) + size * tl.load(row_coef + row)
    for i in tl.static_range(0, SEG, BLOCK):
        if i < n:
            offs = i + tl.arange(0, BLOCK)
            mask = offs < n
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            m = tl.load(m_ptr + offs, mask=mask, other=0.0)
            v = tl.load(v_ptr + offs, mask=mask, other=1.0)
            if NESTEROV:
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
                if MAXIMIZE:
                    g = -g
                num = beta1 * m + one_minus_beta1 * g
            else:
                num = m
            u = num / (tl.sqrt(v) / bias2 + eps)
            tl.store(w_ptr + offs, _rounded(w * scale - size * u, W_DTYPE), mask=mask)


@triton.jit
def sgdp_moments_and_stats(
    w_table,
    g_table,
    b_table,
    seg_tensor,
    seg_start,
    seg_length,
    partials,
    momentum,
    one_minus_dampening,
    W_DTYPE: tl.constexpr,
    G_DTYPE: tl.constexpr,
    C_DTYPE: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    SEG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The momentum buffer, in place, and the four sums of each segment (pass one of SGDP)."""
    s = tl.program_id(0)
    n = tl.load(seg_length + s)
    w_ptr = _segment(w_table, seg_tensor, seg_start, s, W_DTYPE)
    g_ptr = _segment(g_table, seg_tensor, seg_start, s, G_DTYPE)
    b_ptr = _segment(b_table, seg_tensor, seg_start, s, C_DTYPE)
    acc_ww = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_wg = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_gg = tl.zeros([BLOCK], dtype=C_DTYPE)
    acc_wu = tl.zeros([BLOCK], dtype=C_DTYPE)
    for i in tl.static_range(0, SEG, BLOCK):
        if i < n:
            offs = i + tl.arange(0, BLOCK)
            mask = offs < n
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            if MAXIMIZE:
                g = -g
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
            b = momentum * b + one_minus_dampening * g
            tl.store(b_ptr + offs, b, mask=mask)
            if NESTEROV:
                u = g + momentum * b
            else:
                u = b
            acc_ww += w * w
            acc_wg += w * g
            acc_gg += g * g
            acc_wu += w * u
    out = partials + 4 * s
    tl.store(out, tl.sum(acc_ww, 0))
    tl.store(out + 1, tl.sum(acc_wg, 0))
    tl.store(out + 2, tl.sum(acc_gg, 0))
    tl.store(out + 3, tl.sum(acc_wu, 0))


@triton.jit
def sgdp_apply(
    w_table,
    g_table,
    b_table,
    seg_tensor,
    seg_start,
    seg_length,
    seg_row,
    row_coef,
    row_decay,
    lr,
    momentum,
    W_DTYPE: tl.constexpr,
    G_DTYPE: tl.constexpr,
    C_DTYPE: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    SEG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``u <- u - c * w``; ``w <- w * d - lr * u`` for each segment (pass two of SGDP).

    Without Nesterov the update is the momentum buffer itself, and the reference release
    projects it in place: the projected buffer is stored, as there.
    """
    s = tl.program_id(0)
    n = tl.load(seg_length + s)
    row = tl.load(seg_row + s)
    w_ptr = _segment(w_table, seg_tensor, seg_start, s, W_DTYPE)
    g_ptr = _segment(g_table, seg_tensor, seg_start, s, G_DTYPE)
    b_ptr = _segment(b_table, seg_tensor, seg_start, s, C_DTYPE)
    coef = tl.load(row_coef + row)
    decay = tl.load(row_decay + row)
    for i in tl.static_range(0, SEG, BLOCK):
        if i < n:
            offs = i + tl.arange(0, BLOCK)
            mask = offs < n
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
            if NESTEROV:
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(C_DTYPE)
                if MAXIMIZE:
                    g = -g
                u = g + momentum * b - coef * w
            else:
                u = b - coef * w
                tl.store(b_ptr + offs, u, mask=mask)
            tl.store(w_ptr + offs, _rounded(w * decay - lr * u, W_DTYPE), mask=mask)


@triton.jit
def decide(
    stats,
    tensor_row_start,
    tensor_rows,
    tensor_cols,
    codes,
    row_coef,
    row_decay,
    delta,
    eps,
    decay_plain,
    decay_projected,
    WEIGHTS: tl.constexpr,
    CHUNKS: tl.constexpr,
    ROWS: tl.constexpr,
):
    """The scale-invariance test of one tensor from its rows' sums, and its rows' factors.

    One program per tensor. The first ``WEIGHTS`` tensors are weights the test may
    project; the others (one-dimensional parameters) are never projected. Writes each
    row's projection coefficient ``c`` (0 when not projected) and decay factor, and each
    weight's code (0 none, 1 channel view, 2 layer view). The same formulas as
    ``adamp._projection.radial_coefficients``, in one launch instead of a few dozen.
    """
    i = tl.program_id(0)
    first = tl.load(tensor_row_start + i)
    n = tl.load(tensor_rows + i)
    cols = tl.load(tensor_cols + i).to(tl.float32)
    threshold = delta / tl.sqrt(cols)
    fails = tl.zeros([ROWS], dtype=tl.int32)
    t_ww = tl.zeros([ROWS], dtype=tl.float32)
    t_wg = tl.zeros([ROWS], dtype=tl.float32)
    t_gg = tl.zeros([ROWS], dtype=tl.float32)
    t_wu = tl.zeros([ROWS], dtype=tl.float32)
    for c in range(CHUNKS):
        start = c * ROWS
        if start < n:
            rows = start + tl.arange(0, ROWS)
            mask = rows < n
            at = stats + 4 * (first + rows)
            ww = tl.load(at, mask=mask, other=0.0)
            wg = tl.load(at + 1, mask=mask, other=0.0)
            gg = tl.load(at + 2, mask=mask, other=0.0)
            wu = tl.load(at + 3, mask=mask, other=0.0)
            cos = tl.abs(wg) / (tl.maximum(tl.sqrt(gg), eps) * tl.maximum(tl.sqrt(ww), eps))
            fails += tl.where(mask & ~(cos < threshold), 1, 0)
            t_ww += ww
            t_wg += wg
            t_gg += gg
            t_wu += wu
    s_ww = tl.sum(t_ww, 0)
    s_wg = tl.sum(t_wg, 0)
    s_gg = tl.sum(t_gg, 0)
    s_wu = tl.sum(t_wu, 0)
    projectable = i < WEIGHTS
    channel = projectable & (tl.sum(fails, 0) == 0)
    layer_cos = tl.abs(s_wg) / (tl.maximum(tl.sqrt(s_gg), eps) * tl.maximum(tl.sqrt(s_ww), eps))
    layer = projectable & ~channel & (layer_cos < delta / tl.sqrt(cols * n.to(tl.float32)))
    layer_norm = tl.sqrt(s_ww) + eps
    layer_coef = s_wu / (layer_norm * layer_norm)
    decay = tl.where(channel | layer, decay_projected, decay_plain)
    for c in range(CHUNKS):
        start = c * ROWS
        if start < n:
            rows = start + tl.arange(0, ROWS)
            mask = rows < n
            at = stats + 4 * (first + rows)
            ww = tl.load(at, mask=mask, other=1.0)
            wu = tl.load(at + 3, mask=mask, other=0.0)
            norm = tl.sqrt(ww) + eps
            coef = tl.where(channel, wu / (norm * norm), tl.where(layer, layer_coef, 0.0))
            tl.store(row_coef + first + rows, coef, mask=mask)
            tl.store(
                row_decay + first + rows, tl.zeros([ROWS], dtype=tl.float32) + decay, mask=mask
            )
    if projectable:
        code = tl.where(channel, 1, tl.where(layer, 2, 0)).to(tl.uint8)
        tl.store(codes + i, code)
