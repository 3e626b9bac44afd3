"""The scale-invariance test and the projection shared by AdamP and SGDP, without host syncs.

A weight ``w`` is *scale-invariant* when the loss does not change if ``w`` is multiplied by a
positive number, as for a convolution followed by BatchNorm. Its gradient is then orthogonal
to ``w``. AdamP's test: view ``w`` and its gradient ``g`` as rows (the *channel view*, one
row per output channel, ``w.view(w.size(0), -1)``; then the *layer view*, one row holding
everything, ``w.view(1, -1)``) and compute for each row

    cos_i = |<g_i, w_i>| / (max(||g_i||, eps) * max(||w_i||, eps))

The first view whose rows all satisfy ``cos_i < delta / sqrt(row length)`` is taken as the
weight's view; the update ``u`` (Adam's ``m / (sqrt(v) + eps)``, SGD's momentum) then loses
its radial part row by row,

    u_i <- u_i - w_i * <w_i, u_i> / (||w_i|| + eps)^2

and the weight decay of that weight is scaled by ``wd_ratio``. If neither view passes, ``u``
is left alone. The reference release decides with ``if cos.max() < ...`` in Python, a host
sync per view per weight; here the decision is a device tensor and selects between the
candidates with ``torch.where``, so a step never waits for the device.

The result of the test is kept per parameter as a ``uint8`` code (see ``NO_PROJECTION``,
``CHANNEL_VIEW``, ``LAYER_VIEW``) for diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

NO_PROJECTION = 0
"""Code of a weight the step did not project (neither view looked scale-invariant)."""
CHANNEL_VIEW = 1
"""Code of a weight projected row by row over its output channels."""
LAYER_VIEW = 2
"""Code of a weight projected as a whole."""


def _cosine(dot: Tensor, sq_norm_a: Tensor, sq_norm_b: Tensor, eps: float) -> Tensor:
    """``|<a, b>| / (max(||a||, eps) * max(||b||, eps))``, as ``F.cosine_similarity(...).abs()``."""
    return dot.abs() / (sq_norm_a.sqrt().clamp_min(eps) * sq_norm_b.sqrt().clamp_min(eps))


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a_i, b_i>`` for each row.

    ``linalg.vecdot`` runs 2 to 4 times faster on a CPU than ``einsum("ij,ij->i")``, which
    lowers to a batched matrix product of 1-by-n matrices (measured on ResNet-50 shapes,
    ``benchmarks/RESULTS.md``).
    """
    dots: Tensor = torch.linalg.vecdot(a, b, dim=1)
    return dots


def _row_sq_norm(a: Tensor) -> Tensor:
    """``||a_i||^2`` for each row, in one pass."""
    norms: Tensor = torch.linalg.vector_norm(a, dim=1)
    return norms.square()


def radial_coefficient(dot_wu: Tensor, sq_norm_w: Tensor, eps: float) -> Tensor:
    """``<w, u> / (||w|| + eps)^2``: how much of ``w`` to take out of ``u``."""
    return dot_wu / (sq_norm_w.sqrt() + eps).square()


def as_rows(t: Tensor) -> Tensor:
    """``t`` as a matrix with one row per output channel (``reshape(rows, -1)``, which an
    empty tensor cannot do: its row length would be ambiguous)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def scale_invariance_one(
    weight: Tensor, grad: Tensor, update: Tensor, delta: float, eps: float
) -> tuple[Tensor, Tensor]:
    """The test for one weight: each row's projection coefficient and the view's code.

    The readable per-tensor form of the test (the reference for ``radial_coefficients``).
    ``weight`` must have two or more dimensions. Returns ``c`` with one entry per output
    channel, such that the projected update is ``u_i - c_i w_i`` (all zero when neither
    view passes), and a ``uint8`` 0-dim tensor on the weight's device:
    ``NO_PROJECTION``, ``CHANNEL_VIEW`` or ``LAYER_VIEW``.
    """
    w, u = as_rows(weight), as_rows(update)
    channel, layer, w_w = which_view(w, as_rows(grad), delta, eps)
    w_u = row_dot(w, u)
    channel_coef = radial_coefficient(w_u, w_w, eps)
    layer_coef = radial_coefficient(w_u.sum(), w_w.sum(), eps)
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    coef = torch.where(channel, channel_coef, torch.where(layer, layer_coef, zero))
    return coef, view_codes(channel, layer)


def which_view(w: Tensor, g: Tensor, delta: float, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The test itself on a weight and its gradient as rows (``as_rows``): whether the
    channel view passes, whether the layer view does (only if the channel view did not),
    both as 0-dim bool tensors, and each row's ``||w_i||^2`` for the coefficients."""
    rows, cols = w.shape
    w_w = _row_sq_norm(w)
    w_g = row_dot(w, g)
    g_g = _row_sq_norm(g)
    channel = (_cosine(w_g, g_g, w_w, eps) < delta / math.sqrt(max(cols, 1))).all()
    layer_cos = _cosine(w_g.sum(), g_g.sum(), w_w.sum(), eps)
    layer = ~channel & (layer_cos < delta / math.sqrt(max(rows * cols, 1)))
    return channel, layer, w_w


def project_one_(weight: Tensor, grad: Tensor, update: Tensor, delta: float, eps: float) -> Tensor:
    """Project ``update`` in place if ``weight`` looks scale-invariant; return the view's code
    (see ``scale_invariance_one``)."""
    coef, code = scale_invariance_one(weight, grad, update, delta, eps)
    update.addcmul_(weight, coef.view([-1] + [1] * (weight.dim() - 1)), value=-1)
    return code


def view_codes(channel: Tensor, layer: Tensor) -> Tensor:
    """The ``uint8`` code of the view taken, from ``which_view``'s two answers."""
    return torch.where(
        channel,
        CHANNEL_VIEW,
        torch.where(layer, LAYER_VIEW, NO_PROJECTION),
    ).to(torch.uint8)


class RowLayout:
    """Where each weight's rows sit in the concatenation of all rows, built once per shape set.

    ``segment[r]`` is the index of the weight that row ``r`` belongs to; ``row_length[r]``
    and ``numel[i]`` give the thresholds of the two views. Kept on the device so a step
    needs no host-to-device copy.
    """

    def __init__(self, shapes: Sequence[torch.Size], device: torch.device, dtype: torch.dtype):
        rows = [s[0] for s in shapes]
        cols = [math.prod(s[1:]) for s in shapes]
        self.rows = rows
        self.segment = torch.repeat_interleave(
            torch.arange(len(shapes), device=device),
            torch.tensor(rows, device="cpu").to(device),
            output_size=sum(rows),
        )
        self.row_length = torch.repeat_interleave(
            torch.tensor(cols, dtype=dtype).to(device),
            torch.tensor(rows).to(device),
            output_size=sum(rows),
        )
        self.numel = torch.tensor([r * c for r, c in zip(rows, cols, strict=True)], dtype=dtype).to(
            device
        )


_LAYOUTS: dict[tuple[object, ...], RowLayout] = {}
_MAX_CACHED_LAYOUTS = 64


def row_layout(weights: Sequence[Tensor]) -> RowLayout:
    key = (weights[0].device, weights[0].dtype, *(tuple(w.shape) for w in weights))
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) >= _MAX_CACHED_LAYOUTS:
            _LAYOUTS.clear()
        layout = RowLayout([w.shape for w in weights], weights[0].device, weights[0].dtype)
        _LAYOUTS[key] = layout
    return layout


def project_many_(
    weights: Sequence[Tensor],
    grads: Sequence[Tensor],
    updates: Sequence[Tensor],
    delta: float,
    eps: float,
) -> Tensor:
    """``project_one_`` over many weights of one device and dtype with a fixed number of kernels.

    The per-row statistics (``<w,w>``, ``<w,g>``, ``<g,g>``, ``<w,u>``) of all weights are
    concatenated, so both views' tests, the choice and the coefficients are a handful of
    kernels over all rows at once (segment sums with ``index_add_``), whatever the number of
    weights. Returns the ``uint8`` codes, one per weight.
    """
    layout = row_layout(weights)
    flat = [as_rows(w) for w in weights]
    flat_g = [as_rows(g) for g in grads]
    flat_u = [as_rows(u) for u in updates]
    stats = torch.stack(
        [
            torch.cat([_row_sq_norm(w) for w in flat]),
            torch.cat([row_dot(w, g) for w, g in zip(flat, flat_g, strict=True)]),
            torch.cat([_row_sq_norm(g) for g in flat_g]),
            torch.cat([row_dot(w, u) for w, u in zip(flat, flat_u, strict=True)]),
        ],
        dim=1,
    )
    coef, codes = radial_coefficients(stats, layout, delta, eps)
    for weight, update, c in zip(weights, updates, coef.split(layout.rows), strict=True):
        update.addcmul_(weight, c.view([-1] + [1] * (weight.dim() - 1)), value=-1)
    return codes


def radial_coefficients(
    stats: Tensor, layout: RowLayout, delta: float, eps: float
) -> tuple[Tensor, Tensor]:
    """Both views' tests and the projection coefficient of every row, from the row statistics.

    ``stats`` holds one row per weight row (in ``layout``'s order) with the columns
    ``<w,w>``, ``<w,g>``, ``<g,g>``, ``<w,u>``. The layer view's statistics are the sums of
    its rows', so the whole decision is a handful of kernels over all rows, whatever the
    number of weights. Returns the coefficient ``c`` of each row (``u_i <- u_i - c_i w_i``;
    0 where the weight is not projected) and the ``uint8`` code of each weight.
    """
    n = len(layout.rows)
    w_w, w_g, g_g, w_u = stats.unbind(1)
    totals = stats.new_zeros(n, 4).index_add_(0, layout.segment, stats)
    t_ww, t_wg, t_gg, t_wu = totals.unbind(1)

    row_fails = ~(_cosine(w_g, g_g, w_w, eps) < delta / layout.row_length.sqrt())
    failures = stats.new_zeros(n).index_add_(0, layout.segment, row_fails.to(stats.dtype))
    channel = failures == 0
    layer = ~channel & (_cosine(t_wg, t_gg, t_ww, eps) < delta / layout.numel.sqrt())

    seg = layout.segment
    coef = torch.where(
        channel[seg],
        radial_coefficient(w_u, w_w, eps),
        torch.where(layer[seg], radial_coefficient(t_wu, t_ww, eps)[seg], 0.0),
    )
    return coef, view_codes(channel, layer)
