"""Shared pieces of the optimizer tests: a parameter zoo, gradients that make weights
scale-invariant on purpose, a tracer of the reference's decisions, and comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION

SHAPES: dict[str, tuple[int, ...]] = {
    "conv3d": (4, 3, 2, 2, 2),  # 5 dims
    "conv2d": (6, 3, 3, 3),  # 4 dims
    "conv1d": (5, 4, 3),  # 3 dims
    "linear": (7, 5),
    "row": (1, 9),  # 1 x N: its one channel is the whole layer
    "column": (8, 1),  # N x 1: channels of one element, only projected as a whole
    "bias": (6,),
    "norm_weight": (6,),
    "norm_bias": (6,),
}
NAMES = tuple(SHAPES)
WEIGHTS = tuple(n for n in NAMES if len(SHAPES[n]) > 1)

EVERY_CPU_PATH = pytest.mark.parametrize(
    "foreach", [True, False, None], ids=["foreach", "per-tensor", "cpu-kernels"]
)
"""The three ways a CPU step can go: the multi-tensor path, the plain per-tensor path
(the readable reference), and the default, torch's fused CPU kernels (``adamp._cpu``)."""

KINDS = ("channel", "layer", "none", "random")
"""How a weight's gradient is built: orthogonal to each output channel of the weight (as a
BatchNorm after it makes it), orthogonal to the weight only as a whole, strongly radial
(never scale-invariant), or plain random."""


def make_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, Tensor]:
    """One tensor of each shape in ``SHAPES`` (norm weights around 1), as leaf parameters."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in SHAPES.items():
        value = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name == "norm_weight":
            value = 1 + 0.1 * value
        params[name] = value.to(dtype).requires_grad_()
    return params


def clone_params(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: p.detach().clone().requires_grad_() for n, p in params.items()}


def kind_at(step: int, index: int) -> str:
    """The gradient kind of parameter ``index`` at ``step``: every kind, in turn, for each."""
    return KINDS[(step + index) % len(KINDS)]


def make_grad(weight: Tensor, kind: str, gen: torch.Generator, scale: float = 1.0) -> Tensor:
    """A gradient for ``weight`` of the given kind (built in float64, then cast)."""
    w = weight.detach().to(torch.float64)
    rows = w.shape[0] if w.dim() > 1 else 1
    w = w.reshape(rows, -1)
    r = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    kind = effective_kind(tuple(weight.shape), kind)
    if weight.dim() <= 1 or kind == "random":
        g = r
    elif kind == "channel":
        # What a BatchNorm after the layer does: no radial part in any output channel.
        g = r - w * (torch.linalg.vecdot(r, w) / torch.linalg.vecdot(w, w)).unsqueeze(1)
    elif kind == "layer":
        # Strongly radial rows, of alternating sign, then no radial part for the whole.
        signs = torch.tensor([(-1.0) ** i * (1 + i) for i in range(rows)], dtype=torch.float64)
        ratio = r.norm(dim=1) / w.norm(dim=1)
        g = r + 2 * (signs * ratio).unsqueeze(1) * w
        g = g - w * (g * w).sum() / (w * w).sum()
    elif kind == "none":
        g = r + 3 * w * r.norm() / w.norm()
    else:
        raise ValueError(kind)
    return (scale * g).reshape(weight.shape).to(weight.dtype)


def effective_kind(shape: tuple[int, ...], kind: str) -> str:
    """``kind``, except that weights with one element per output channel (N x 1) get no
    channel-invariant gradients: the projection of a one-element channel keeps only about
    ``2 eps / |w|`` of the update, a difference of nearly equal numbers whose rounding
    noise no two implementations share. Such weights get layer-invariant ones instead.
    """
    if kind == "channel" and len(shape) > 1 and math.prod(shape[1:]) == 1:
        return "layer"
    return kind


def expected_code(name: str, kind: str) -> int | None:
    """The projection code a gradient of ``kind`` must give (``None``: any)."""
    if len(SHAPES[name]) <= 1:
        return NO_PROJECTION
    kind = effective_kind(SHAPES[name], kind)
    if kind == "channel":
        return CHANNEL_VIEW
    if kind == "layer":
        # A one-row weight passes the channel test first: its channel is the whole layer.
        return CHANNEL_VIEW if SHAPES[name][0] == 1 else LAYER_VIEW
    if kind == "none":
        return NO_PROJECTION
    return None


def trace_reference(ref_opt: Any) -> dict[int, int]:
    """Instrument a reference optimizer so that, after each step, ``codes[id(p)]`` says which
    view its projection took for ``p`` (our code numbers), as decided by the reference.

    The reference's ``_projection`` returns ``wd_ratio`` exactly when it projected, after
    computing the cosine similarity for each view it tried in order; a unique stand-in for
    ``wd_ratio`` shows whether it projected, the last view tried shows which.
    """
    codes: dict[int, int] = {}
    views: list[str] = []
    cosine = ref_opt._cosine_similarity
    projection = ref_opt._projection
    taken = object()

    def traced_cosine(x, y, eps, view_func):
        views.append(view_func.__name__)
        return cosine(x, y, eps, view_func)

    def traced_projection(p, grad, perturb, delta, wd_ratio, eps):
        views.clear()
        perturb, wd = projection(p, grad, perturb, delta, taken, eps)
        if wd is taken:
            codes[id(p)] = {"_channel_view": CHANNEL_VIEW, "_layer_view": LAYER_VIEW}[views[-1]]
            return perturb, wd_ratio
        codes[id(p)] = NO_PROJECTION
        return perturb, wd

    ref_opt._cosine_similarity = traced_cosine
    ref_opt._projection = traced_projection
    return codes


def rel_diff(ours: Tensor, ref: Tensor) -> float:
    """``max |ours - ref| / max |ref|`` in float64 (the absolute difference if ref is 0)."""
    ours64, ref64 = ours.detach().to(torch.float64), ref.detach().to(torch.float64)
    assert ours64.shape == ref64.shape
    diff = (ours64 - ref64).abs().max().item()
    scale = ref64.abs().max().item()
    return diff / scale if scale > 0 else diff


def assert_close(ours: Tensor, ref: Tensor, tol: float, what: str = "") -> None:
    assert torch.isfinite(ours).all(), f"{what}: non-finite values"
    diff = rel_diff(ours, ref)
    assert diff < tol, f"{what}: relative difference {diff:.3g} >= {tol:.3g}"


def assert_all_close(
    ours: Mapping[str, Tensor], ref: Mapping[str, Tensor], tol: float, what: str = ""
) -> None:
    for name in ours:
        assert_close(ours[name], ref[name], tol, f"{what} {name}")


def param_groups(
    params: Mapping[str, Tensor], layout: Sequence[tuple[Iterable[str], dict[str, Any]]]
) -> list[dict[str, Any]]:
    return [{"params": [params[n] for n in names], **options} for names, options in layout]


def set_grads(
    params: Mapping[str, Tensor],
    others: Iterable[Mapping[str, Tensor]],
    step: int,
    gen: torch.Generator,
    kinds: Callable[[int, int], str] = kind_at,
    scale: float = 1.0,
) -> dict[str, str]:
    """Give ``params`` and each mapping in ``others`` the same gradients, built from
    ``params``; returns the kind used for each name."""
    used = {}
    others = list(others)
    for index, (name, p) in enumerate(params.items()):
        kind = kinds(step, index)
        g = make_grad(p, kind, gen, scale)
        p.grad = g.clone()
        for other in others:
            other[name].grad = g.clone().to(other[name].dtype)
        used[name] = kind
    return used


def codes_of(opt: torch.optim.Optimizer, params: Mapping[str, Tensor]) -> dict[str, int]:
    return {n: int(opt.state[p]["projection"].item()) for n, p in params.items()}


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-10, torch.float32: 1e-5}[dtype]
